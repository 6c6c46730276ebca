// The rules page: every stored rule with its counters and alerts, switched on and off
// in place; a rule's YAML edited and saved (`PUT /api/v1/rules/{id}?version=N`, the node's
// refusal shown under the editor with the line it names marked); new rules; and a trial of
// the text being edited over the last 24 hours (`POST /api/v1/rules/trial`, a job followed
// to its end), its would-be alerts drawn on the main map.

import { api, ApiError, messageOf, unavailable } from './api';
import { fixedLayer } from './cityindex';
import type { Session } from './context';
import { h } from './dom';
import { CodeEditor } from './editor';
import { formatDateTime, formatNumber, t, tCode } from './i18n';
import { followJob } from './jobs';
import type { CityMap } from './map';
import { replaceRoute } from './router';
import type { Job, RuleItem, TrialResult } from './types';
import { lineOf, ruleIdOf, toYaml, withEnabled } from './yaml';

const NEW_RULE = `id: new-rule
kind: match
when: 'event.kind == "smoke" && event.attrs.alarm == true'
severity: medium
category: fire.smoke
enabled: false
`;
/** Grids listed in a trial's result. */
const TOP_GRIDS = 10;

export interface RulesHooks {
  /** The main map, once it exists. */
  map(): CityMap | null;
}

interface Editing {
  /** The stored rule; null while a new one is written. */
  item: RuleItem | null;
  saved: string;
  error: string | null;
  ok: string | null;
  conflict: boolean;
  trial: TrialState | null;
}

interface TrialState {
  job: Job<TrialResult> | null;
  error: string | null;
  abort: AbortController;
}

/** The rule's text: as the node wrote it, else its JSON as YAML. */
function textOf(item: RuleItem): string {
  if (item.yaml) return item.yaml;
  return typeof item.rule === 'string' ? item.rule : toYaml(item.rule);
}

function specField(item: RuleItem, key: string): string {
  const value = typeof item.rule === 'object' && item.rule ? item.rule[key] : undefined;
  return typeof value === 'string' || typeof value === 'number' ? String(value) : '';
}

export class RulesPage {
  readonly el: HTMLElement;
  private items: RuleItem[] = [];
  private loading = false;
  private listError: string | null = null;
  private listNote: string | null = null;
  private editing: Editing | null = null;
  private editor: CodeEditor | null = null;
  private busy = false;
  private readonly canEdit: boolean;

  constructor(
    session: Session,
    private readonly hooks: RulesHooks,
  ) {
    this.canEdit = session.me.role === 'analyst' || session.me.role === 'admin';
    this.el = h('section', { className: 'rules-page', 'aria-labelledby': 'rules-heading' });
  }

  /** Shows the page (with rule `id` open, if given) and loads the list. */
  show(id: string | null): void {
    void this.load().then(() => {
      if (id && this.editing?.item?.id !== id) {
        const item = this.items.find((r) => r.id === id);
        if (item) this.open(item);
      }
    });
    this.render();
  }

  relabel(): void {
    this.render();
  }

  dispose(): void {
    this.editing?.trial?.abort.abort();
  }

  private async load(): Promise<void> {
    this.loading = true;
    this.render();
    try {
      this.items = (await api.rules()).items.sort((a, b) => a.id.localeCompare(b.id));
      this.listError = null;
    } catch (e) {
      this.listError = messageOf(e);
    } finally {
      this.loading = false;
    }
    this.render();
  }

  private render(): void {
    const header = h(
      'header',
      { className: 'page-header' },
      h('h2', { id: 'rules-heading' }, t('rules_heading')),
      h('div', { className: 'spacer' }),
      this.canEdit ? h('button', { type: 'button', className: 'primary', 'data-action': 'new-rule', onclick: () => this.openNew() }, t('rules_new')) : '',
      h('button', { type: 'button', className: 'secondary', onclick: () => void this.load(), disabled: this.loading }, t('reload')),
    );
    const status = h(
      'p',
      { className: this.listError ? 'error' : 'muted', role: this.listError ? 'alert' : 'status' },
      this.listError ? t('error_generic', { detail: this.listError }) : this.listNote ?? (this.loading ? t('loading') : t('rules_count', { n: this.items.length })),
    );
    // Keep the editor (and what is typed in it) across redraws.
    this.el.replaceChildren(header, status, this.table(), this.editing ? this.editorSection(this.editing) : '');
  }

  private table(): HTMLElement {
    const head = [t('rules_on'), t('rules_id'), t('field_severity'), t('rules_version'), t('rules_updated'), t('rules_matched'), t('rules_alerts')];
    return h(
      'div',
      { className: 'table-wrap rules-table-wrap' },
      h(
        'table',
        { className: 'data rules-table' },
        h('thead', {}, h('tr', {}, head.map((c, i) => h('th', { scope: 'col', className: i >= 3 && i !== 4 ? 'num' : '' }, c)))),
        h(
          'tbody',
          {},
          this.items.map((item) => {
            const toggle = h('input', {
              type: 'checkbox',
              'aria-label': t('rules_enable', { id: item.id }),
              'data-toggle': item.id,
              disabled: !this.canEdit || this.busy,
            });
            toggle.checked = item.enabled;
            toggle.addEventListener('change', () => void this.setEnabled(item, toggle.checked));
            const stats = item.stats;
            const selected = this.editing?.item?.id === item.id;
            const what = [specField(item, 'kind'), specField(item, 'category')].filter(Boolean).join(' · ');
            return h(
              'tr',
              { 'data-rule-id': item.id, className: `${selected ? 'selected' : ''} ${item.enabled ? '' : 'off'}` },
              h('td', {}, toggle),
              h(
                'td',
                { className: 'rule-cell' },
                h('button', { type: 'button', className: 'link', 'data-open-rule': item.id, onclick: () => this.open(item) }, item.id),
                what ? h('div', { className: 'muted small' }, what) : '',
              ),
              h('td', {}, tCode('severity', specField(item, 'severity'))),
              h('td', { className: 'num' }, String(item.version)),
              h('td', { className: 'nowrap', title: item.updated_by ?? '' }, formatDateTime(item.updated_at, true)),
              h(
                'td',
                { className: 'num', title: stats ? t('rules_stats_title', statsParams(stats)) : '' },
                stats ? `${formatNumber(stats.matched ?? 0)} / ${formatNumber(stats.raised ?? 0)}` : '—',
              ),
              h('td', { className: 'num' }, item.alerts ? t('rules_alerts_value', { open: formatNumber(item.alerts.open), day: formatNumber(item.alerts.last_24h) }) : '—'),
            );
          }),
        ),
      ),
    );
  }

  private async setEnabled(item: RuleItem, enabled: boolean): Promise<void> {
    this.busy = true;
    this.listNote = null;
    try {
      const saved = await api.putRule(item.id, item.version, withEnabled(textOf(item), enabled));
      this.replace(item, saved);
      this.listNote = t(enabled ? 'rules_enabled_done' : 'rules_disabled_done', { id: item.id });
    } catch (e) {
      this.listError = t('rules_toggle_failed', { id: item.id, message: messageOf(e) });
    } finally {
      this.busy = false;
    }
    this.render();
  }

  /** Puts a saved rule in the list, keeping the counters the save answer lacks. */
  private replace(old: RuleItem | null, saved: RuleItem): RuleItem {
    const merged: RuleItem = { ...saved, stats: saved.stats ?? old?.stats, alerts: saved.alerts ?? old?.alerts };
    const at = this.items.findIndex((r) => r.id === saved.id);
    if (at >= 0) this.items[at] = merged;
    else this.items = [...this.items, merged].sort((a, b) => a.id.localeCompare(b.id));
    if (this.editing?.item && this.editing.item.id === saved.id) this.editing.item = merged;
    return merged;
  }

  private discardOk(): boolean {
    return !this.editing || !this.editor || this.editor.value === this.editing.saved || window.confirm(t('rules_discard'));
  }

  private open(item: RuleItem): void {
    if (this.editing?.item?.id === item.id || !this.discardOk()) return;
    this.startEditing(item, textOf(item));
    replaceRoute('rules', item.id);
  }

  private openNew(): void {
    if (!this.discardOk()) return;
    this.startEditing(null, NEW_RULE);
    replaceRoute('rules');
  }

  private startEditing(item: RuleItem | null, text: string): void {
    this.editing?.trial?.abort.abort();
    this.editing = { item, saved: text, error: null, ok: null, conflict: false, trial: null };
    this.editor = new CodeEditor(t('rules_editor_label'), text, !this.canEdit);
    this.render();
    this.el.querySelector('.rule-editor')?.scrollIntoView({ block: 'nearest' });
  }

  private close(): void {
    if (!this.discardOk()) return;
    this.editing?.trial?.abort.abort();
    this.editing = null;
    this.editor = null;
    replaceRoute('rules');
    this.render();
  }

  private editorSection(editing: Editing): HTMLElement {
    const editor = this.editor as CodeEditor;
    const item = editing.item;
    const line = editing.error ? lineOf(editing.error) : null;
    editor.markLine(line);
    const stats = item?.stats;
    return h(
      'section',
      { className: 'rule-editor', 'aria-labelledby': 'rule-editor-heading', 'data-rule': item?.id ?? '' },
      h('h3', { id: 'rule-editor-heading' }, item ? t('rules_edit_heading', { id: item.id }) : t('rules_new_heading')),
      item
        ? h(
            'p',
            { className: 'muted' },
            t('rules_meta', { version: item.version, by: item.updated_by ?? '', at: formatDateTime(item.updated_at) }),
            stats ? ` · ${t('rules_stats_title', statsParams(stats))}` : '',
          )
        : h('p', { className: 'muted' }, t('rules_new_hint')),
      editor.el,
      h(
        'div',
        { className: 'editor-error', role: 'alert', 'data-line': line ?? '' },
        editing.error
          ? [
              h('span', {}, editing.error),
              line ? h('button', { type: 'button', className: 'link', onclick: () => editor.goToLine(line) }, t('rules_go_to_line', { n: line })) : '',
              editing.conflict ? h('button', { type: 'button', className: 'link', onclick: () => void this.reloadEditing() }, t('rules_load_current')) : '',
            ]
          : '',
      ),
      editing.ok ? h('p', { className: 'ok', role: 'status' }, editing.ok) : '',
      h(
        'div',
        { className: 'form-buttons' },
        this.canEdit ? h('button', { type: 'button', className: 'primary', 'data-action': 'save-rule', disabled: this.busy, onclick: () => void this.save() }, t('rules_save')) : '',
        this.canEdit
          ? h(
              'button',
              { type: 'button', 'data-action': 'trial', disabled: editing.trial?.job?.state === 'running' || this.busy, onclick: () => void this.trial() },
              t('rules_trial'),
            )
          : '',
        this.canEdit ? h('button', { type: 'button', className: 'secondary', onclick: () => ((editor.value = editing.saved), (editing.error = null), this.render()) }, t('rules_revert')) : '',
        h('button', { type: 'button', className: 'secondary', onclick: () => this.close() }, t('close')),
      ),
      editing.trial ? this.trialSection(editing.trial) : '',
    );
  }

  private async save(): Promise<void> {
    const editing = this.editing;
    const editor = this.editor;
    if (!editing || !editor || this.busy) return;
    const text = editor.value;
    const id = editing.item?.id ?? ruleIdOf(text);
    editing.ok = null;
    editing.conflict = false;
    if (!id) {
      editing.error = t('rules_need_id');
      this.render();
      return;
    }
    if (!editing.item && this.items.some((r) => r.id === id)) {
      editing.error = t('rules_id_taken', { id });
      this.render();
      return;
    }
    this.busy = true;
    this.render();
    try {
      const saved = this.replace(editing.item, await api.putRule(id, editing.item?.version ?? 0, text));
      if (this.editing !== editing) return;
      editing.item = saved;
      // The node's own YAML when it sends it; else what was typed (it was accepted as is).
      editing.saved = saved.yaml ?? text;
      if (saved.yaml && saved.yaml !== text) editor.value = saved.yaml;
      editing.error = null;
      editing.ok = t('rules_saved', { id, version: saved.version });
      replaceRoute('rules', id);
    } catch (e) {
      editing.error = messageOf(e);
      editing.conflict = e instanceof ApiError && e.status === 409;
    } finally {
      this.busy = false;
    }
    this.render();
  }

  /** After a version conflict: the stored rule, replacing what was typed. */
  private async reloadEditing(): Promise<void> {
    const id = this.editing?.item?.id;
    await this.load();
    const item = this.items.find((r) => r.id === id);
    if (item && this.editing) {
      this.editing.saved = textOf(item);
      this.editing.item = item;
      this.editing.error = null;
      this.editing.conflict = false;
      if (this.editor) this.editor.value = this.editing.saved;
      this.render();
    }
  }

  private async trial(): Promise<void> {
    const editing = this.editing;
    const editor = this.editor;
    if (!editing || !editor) return;
    editing.trial?.abort.abort();
    const state: TrialState = { job: null, error: null, abort: new AbortController() };
    editing.trial = state;
    editing.error = null;
    editing.ok = null;
    this.hooks.map()?.setOverlay('trial', null);
    this.render();
    this.el.querySelector('.trial')?.scrollIntoView({ block: 'nearest' });
    try {
      state.job = await api.trial(editor.value);
      this.render();
      state.job = await followJob(
        state.job,
        (job) => {
          state.job = job;
          if (this.editing?.trial === state) this.renderTrial(state);
        },
        state.abort.signal,
      );
      if (state.job.state === 'done' && state.job.result) this.showTrialOnMap(state.job.result);
    } catch (e) {
      if (unavailable(e)) state.error = t('rules_trial_unavailable');
      else if (!state.job) {
        // Refused before it started: an invalid rule, shown where a save's refusal is.
        editing.error = messageOf(e);
        editing.trial = null;
      } else state.error = messageOf(e);
    }
    if (this.editing === editing) this.render();
  }

  private showTrialOnMap(result: TrialResult): void {
    const map = this.hooks.map();
    if (!map) return;
    const points = result.items.filter((i) => typeof i.lon === 'number' && typeof i.lat === 'number');
    map.setOverlay(
      'trial',
      points.map((i) => ({
        type: 'Feature',
        geometry: { type: 'Point', coordinates: [i.lon as number, i.lat as number] },
        properties: { id: i.id, title: i.title ?? '', severity: i.severity ?? 'medium', time: i.time, grid: i.grid ?? '' },
      })),
    );
    map.fitPoints(points.map((i) => [i.lon as number, i.lat as number]));
  }

  /** Updates the progress in place (a full redraw every half second would lose the caret). */
  private renderTrial(state: TrialState): void {
    this.el.querySelector('.trial')?.replaceWith(this.trialSection(state));
  }

  private trialSection(state: TrialState): HTMLElement {
    const job = state.job;
    const box = h('section', { className: 'trial', 'aria-live': 'polite', 'data-state': state.error ? 'failed' : job?.state ?? 'starting' });
    box.appendChild(h('h4', {}, t('rules_trial_heading')));
    if (state.error) {
      box.appendChild(h('p', { className: 'error', role: 'alert' }, state.error));
      return box;
    }
    if (!job || job.state === 'running') {
      const done = job?.progress?.done ?? 0;
      const total = job?.progress?.total ?? 0;
      const bar = h('progress', { max: String(Math.max(total, 1)), value: String(done), 'aria-label': t('rules_trial_heading') });
      box.append(
        bar,
        h('p', { className: 'muted' }, total ? t('rules_trial_progress', { done: formatNumber(done), total: formatNumber(total), pct: formatNumber((100 * done) / total) }) : t('rules_trial_starting')),
        h('button', { type: 'button', className: 'secondary', onclick: () => this.stopTrial(state) }, t('rules_trial_stop')),
      );
      return box;
    }
    if (job.state === 'failed') {
      box.appendChild(h('p', { className: 'error', role: 'alert' }, t('rules_trial_failed', { message: job.error ?? '' })));
      return box;
    }
    const result = job.result;
    if (!result) return box;
    const top = [...result.by_grid].sort((a, b) => b.alerts - a.alerts).slice(0, TOP_GRIDS);
    const most = top[0]?.alerts ?? 0;
    const onMap = result.items.filter((i) => typeof i.lon === 'number' && typeof i.lat === 'number').length;
    box.append(
      h('p', { className: 'trial-summary' }, t('rules_trial_result', { events: formatNumber(result.events), alerts: formatNumber(result.alerts) })),
      top.length
        ? h(
            'table',
            { className: 'data trial-grids' },
            h('caption', {}, t('rules_trial_top_grids')),
            h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('field_grid')), h('th', { scope: 'col' }, t('rules_trial_alerts')))),
            h(
              'tbody',
              {},
              top.map((g) =>
                h(
                  'tr',
                  {},
                  h('td', {}, g.grid ? h('button', { type: 'button', className: 'link', onclick: () => void this.showGrid(g.grid as string) }, g.grid) : t('no_place')),
                  h(
                    'td',
                    { className: 'num bar-cell' },
                    h('span', { className: 'inline-bar', style: `width:${most ? (100 * g.alerts) / most : 0}%` }),
                    h('span', {}, formatNumber(g.alerts)),
                  ),
                ),
              ),
            ),
          )
        : '',
      h(
        'p',
        {},
        t('rules_trial_on_map', { n: formatNumber(onMap) }),
        ' ',
        onMap ? h('button', { type: 'button', className: 'secondary', onclick: () => this.showTrialOnMap(result) }, t('rules_trial_show')) : '',
        ' ',
        onMap ? h('button', { type: 'button', className: 'secondary', 'data-action': 'clear-trial', onclick: () => this.hooks.map()?.setOverlay('trial', null) }, t('rules_trial_clear')) : '',
      ),
    );
    return box;
  }

  private stopTrial(state: TrialState): void {
    state.abort.abort();
    state.error = t('rules_trial_stopped');
    this.renderTrial(state);
  }

  private async showGrid(grid: string): Promise<void> {
    const map = this.hooks.map();
    if (!map) return;
    const grids = await fixedLayer('grids').catch(() => null);
    const feature = grids?.features.find((f) => String(f.properties.id ?? f.id) === grid);
    if (!feature) return;
    const points: [number, number][] = [];
    const collect = (c: unknown): void => {
      if (Array.isArray(c) && typeof c[0] === 'number') points.push([c[0], c[1] as number]);
      else if (Array.isArray(c)) c.forEach(collect);
    };
    collect(feature.geometry.coordinates);
    map.fitPoints(points);
  }
}

function statsParams(stats: NonNullable<RuleItem['stats']>): Record<string, string> {
  const n = (v: number | undefined) => formatNumber(v ?? 0);
  return {
    matched: n(stats.matched),
    raised: n(stats.raised),
    repeated: n(stats.repeated),
    cleared: n(stats.cleared),
    errors: n(stats.eval_errors),
    late: n(stats.out_of_order),
    keys: n(stats.keys),
  };
}
