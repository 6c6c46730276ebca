// Duty officers' shortcuts. Keys typed into a form field belong to the field.

export interface KeyboardHandlers {
  active(): boolean;
  move(delta: 1 | -1): void;
  open(): void;
  act(action: 'ack' | 'dispatch' | 'resolve'): void;
  escape(): void;
  help(): void;
}

function typingIn(target: EventTarget | null): boolean {
  if (!(target instanceof HTMLElement)) return false;
  return target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName);
}

export function installKeyboard(handlers: KeyboardHandlers): () => void {
  const onKey = (event: KeyboardEvent) => {
    if (event.ctrlKey || event.metaKey || event.altKey || !handlers.active()) return;
    if (event.key === 'Escape') {
      // Esc also leaves a field: close the panel from anywhere but an open dialog.
      handlers.escape();
      return;
    }
    if (typingIn(event.target)) return;
    const keys: Record<string, () => void> = {
      j: () => handlers.move(1),
      k: () => handlers.move(-1),
      Enter: () => handlers.open(),
      a: () => handlers.act('ack'),
      d: () => handlers.act('dispatch'),
      r: () => handlers.act('resolve'),
      '?': () => handlers.help(),
    };
    const run = keys[event.key];
    if (!run) return;
    // Enter on a focused button or link keeps its own meaning.
    if (event.key === 'Enter' && event.target instanceof HTMLElement && ['BUTTON', 'A'].includes(event.target.tagName)) return;
    event.preventDefault();
    run();
  };
  document.addEventListener('keydown', onKey);
  return () => document.removeEventListener('keydown', onKey);
}
