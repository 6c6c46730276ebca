// A plain text editor for rules: a monospace textarea without wrapping, line numbers
// beside it, and one line that can be marked (where the node says a rule is wrong).

import { h, uid } from './dom';

/** Pixels per line and around the text: the CSS (.code-editor) uses the same. */
const LINE_PX = 20;
const PAD_PX = 6;

export class CodeEditor {
  readonly el: HTMLElement;
  readonly textarea: HTMLTextAreaElement;
  private readonly numbers: HTMLElement;
  private readonly mark: HTMLElement;
  private lines = 0;
  private marked: number | null = null;

  constructor(label: string, value: string, readOnly = false) {
    this.textarea = h('textarea', {
      id: uid('code'),
      className: 'code-text',
      spellcheck: 'false',
      autocomplete: 'off',
      autocapitalize: 'off',
      wrap: 'off',
      'aria-label': label,
      'data-editor': '',
    });
    this.textarea.value = value;
    this.textarea.readOnly = readOnly;
    this.numbers = h('div', { className: 'code-numbers', 'aria-hidden': 'true' });
    this.mark = h('div', { className: 'code-mark', hidden: true, 'aria-hidden': 'true' });
    this.el = h(
      'div',
      { className: 'code-editor' },
      h('div', { className: 'code-gutter' }, this.numbers),
      h('div', { className: 'code-area' }, this.mark, this.textarea),
    );
    this.textarea.addEventListener('input', () => this.refresh());
    this.textarea.addEventListener('scroll', () => this.follow());
    this.refresh();
  }

  get value(): string {
    return this.textarea.value;
  }

  set value(text: string) {
    this.textarea.value = text;
    this.refresh();
  }

  /** Marks line `n` (1-based) in the gutter and behind the text; null clears the mark. */
  markLine(n: number | null): void {
    this.marked = n !== null && n >= 1 ? n : null;
    this.refreshNumbers(true);
    this.follow();
  }

  /** Puts the caret at the start of line `n` and scrolls it into view. */
  goToLine(n: number): void {
    const lines = this.textarea.value.split('\n');
    const line = Math.max(1, Math.min(n, lines.length));
    const offset = lines.slice(0, line - 1).reduce((sum, l) => sum + l.length + 1, 0);
    this.textarea.focus();
    this.textarea.setSelectionRange(offset, offset + (lines[line - 1]?.length ?? 0));
    const top = (line - 1) * LINE_PX;
    const view = this.textarea.clientHeight;
    if (top < this.textarea.scrollTop || top + LINE_PX > this.textarea.scrollTop + view) this.textarea.scrollTop = Math.max(0, top - view / 2);
    this.follow();
  }

  private refresh(): void {
    this.refreshNumbers(false);
    this.follow();
  }

  private refreshNumbers(force: boolean): void {
    const count = this.textarea.value.split('\n').length;
    if (count === this.lines && !force) return;
    this.lines = count;
    const items: HTMLElement[] = [];
    for (let i = 1; i <= count; i++) items.push(h('div', { className: i === this.marked ? 'marked' : '' }, String(i)));
    this.numbers.replaceChildren(...items);
  }

  /** Keeps the numbers and the mark level with the scrolled text. */
  private follow(): void {
    const top = this.textarea.scrollTop;
    this.numbers.style.transform = `translateY(${-top}px)`;
    if (this.marked === null) {
      this.mark.hidden = true;
      return;
    }
    this.mark.hidden = false;
    this.mark.style.top = `${PAD_PX + (this.marked - 1) * LINE_PX - top}px`;
  }
}
