// The zone editor on the main map, for analysts and administrators: draw a new area
// (Polygon) or corridor (LineString with a width in metres), or change an existing one,
// name it and save it (`PUT /api/v1/city/zones/{id}`), or delete it
// (`DELETE /api/v1/city/zones/{id}`, refused while a rule uses the zone). The zones layer
// is loaded again after every change.

import { api, messageOf, unavailable } from './api';
import type { Session } from './context';
import { field, h, uid } from './dom';
import type { DrawKind, LngLat } from './draw';
import { t } from './i18n';
import type { CityMap } from './map';
import type { Feature, ZoneFeature } from './types';

const KNOWN_KINDS = ['restricted', 'depot', 'school', 'square', 'underpass', 'corridor'];
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Roles that may change zones (the node checks again). */
export function canEditZones(session: Session): boolean {
  return session.me.role === 'analyst' || session.me.role === 'admin';
}

interface Editing {
  kind: DrawKind;
  /** The zone being changed; null for a new one. */
  zone: Feature | null;
  id: string;
  name: string;
  zoneKind: string;
  width: string;
}

export class ZoneEditor {
  readonly el: HTMLElement;
  private open = false;
  private editing: Editing | null = null;
  private confirmDelete: string | null = null;
  private message: { text: string; error: boolean } | null = null;
  private busy = false;

  constructor(private readonly cityMap: CityMap) {
    this.el = h('section', { className: 'zone-tool', 'aria-label': t('zones_heading') });
    this.render();
  }

  relabel(): void {
    this.el.setAttribute('aria-label', t('zones_heading'));
    this.render();
  }

  private say(text: string, error: boolean): void {
    this.message = { text, error };
  }

  /** The node's refusal in its own words, or that this node cannot edit zones at all. */
  private refused(e: unknown): void {
    this.say(unavailable(e) ? t('zones_unavailable') : messageOf(e), true);
  }

  private render(): void {
    if (!this.open) {
      this.el.replaceChildren(
        h('button', { type: 'button', className: 'zone-toggle', 'aria-expanded': 'false', onclick: () => this.toggle(true) }, t('zones_open')),
      );
      return;
    }
    const header = h(
      'header',
      { className: 'zone-header' },
      h('h3', {}, t('zones_heading')),
      h('button', { type: 'button', className: 'icon', 'aria-label': t('close'), title: t('close'), 'aria-expanded': 'true', onclick: () => this.toggle(false) }, '×'),
    );
    const message = h('p', { className: `zone-message ${this.message?.error ? 'error' : 'ok'}`, role: this.message?.error ? 'alert' : 'status' }, this.message?.text ?? '');
    this.el.replaceChildren(header, this.editing ? this.form(this.editing) : this.list(), message);
  }

  private toggle(open: boolean): void {
    if (!open && this.editing) this.cityMap.draw.cancel();
    this.open = open;
    this.message = null;
    this.render();
  }

  private list(): HTMLElement {
    const zones = [...this.cityMap.zones().features].sort((a, b) => String(a.properties.name ?? a.id).localeCompare(String(b.properties.name ?? b.id)));
    return h(
      'div',
      { className: 'zone-list-box' },
      h(
        'div',
        { className: 'form-buttons' },
        h('button', { type: 'button', className: 'primary', 'data-zone-new': 'polygon', onclick: () => this.startNew('polygon') }, t('zones_new_area')),
        h('button', { type: 'button', 'data-zone-new': 'line', onclick: () => this.startNew('line') }, t('zones_new_corridor')),
      ),
      zones.length
        ? h(
            'ul',
            { className: 'zone-list' },
            zones.map((z) => {
              const id = String(z.properties.id ?? z.id);
              const name = String(z.properties.name ?? id);
              if (this.confirmDelete === id) {
                return h(
                  'li',
                  { 'data-zone-id': id },
                  h('span', {}, t('zones_delete_confirm', { name })),
                  h('button', { type: 'button', className: 'danger', 'data-confirm': 'yes', disabled: this.busy, onclick: () => void this.remove(id, name) }, t('zones_delete_yes')),
                  h('button', { type: 'button', 'data-confirm': 'no', onclick: () => ((this.confirmDelete = null), this.render()) }, t('cancel')),
                );
              }
              return h(
                'li',
                { 'data-zone-id': id },
                h('span', { className: 'zone-name' }, name),
                h('span', { className: 'muted' }, ` ${String(z.properties.kind ?? '')}`),
                h('span', { className: 'zone-actions' },
                  h('button', { type: 'button', className: 'link', 'data-zone-edit': id, onclick: () => this.startEdit(z) }, t('zones_edit')),
                  h('button', { type: 'button', className: 'link', 'data-zone-delete': id, onclick: () => ((this.confirmDelete = id), (this.message = null), this.render()) }, t('zones_delete')),
                ),
              );
            }),
          )
        : h('p', { className: 'muted' }, t('zones_none')),
    );
  }

  private startNew(kind: DrawKind): void {
    this.editing = { kind, zone: null, id: '', name: '', zoneKind: kind === 'line' ? 'corridor' : '', width: kind === 'line' ? '50' : '' };
    this.message = null;
    this.cityMap.draw.start(kind, this.drawHooks());
    this.cityMap.draw.setWidth(kind === 'line' ? 50 : null);
    this.render();
  }

  private startEdit(zone: Feature): void {
    const geometry = zone.geometry as GeoJSON.Geometry;
    let kind: DrawKind;
    let points: LngLat[];
    if (geometry.type === 'Polygon') {
      kind = 'polygon';
      points = (geometry.coordinates[0] ?? []).slice(0, -1) as LngLat[];
    } else if (geometry.type === 'LineString') {
      kind = 'line';
      points = geometry.coordinates as LngLat[];
    } else {
      this.say(t('zones_not_editable', { type: geometry.type }), true);
      this.render();
      return;
    }
    const p = zone.properties;
    const width = p.width_m === null || p.width_m === undefined ? '' : String(p.width_m);
    this.editing = { kind, zone, id: String(p.id ?? zone.id), name: String(p.name ?? ''), zoneKind: String(p.kind ?? ''), width };
    this.message = geometry.type === 'Polygon' && geometry.coordinates.length > 1 ? { text: t('zones_holes_dropped'), error: false } : null;
    this.cityMap.draw.start(kind, this.drawHooks(), points);
    this.cityMap.draw.setWidth(kind === 'line' ? Number(width) || null : null);
    this.cityMap.fitPoints(points);
    this.render();
  }

  private drawHooks() {
    return {
      changed: () => this.refreshDrawState(),
      finished: () => this.render(),
      cancelled: () => {
        this.editing = null;
        this.render();
      },
    };
  }

  /** Keeps what was typed and updates the point count and buttons, without a redraw. */
  private refreshDrawState(): void {
    const count = this.el.querySelector<HTMLElement>('.zone-points');
    if (count) count.textContent = t('zones_points', { n: this.cityMap.draw.count });
    const finish = this.el.querySelector<HTMLButtonElement>('button[data-zone-finish]');
    if (finish) finish.disabled = this.cityMap.draw.count < (this.editing?.kind === 'polygon' ? 3 : 2);
  }

  private form(editing: Editing): HTMLElement {
    const draw = this.cityMap.draw;
    const form = h('form', { className: 'zone-form', 'data-zone-form': editing.kind });
    const id = h('input', { type: 'text', name: 'zone-id', required: true, autocomplete: 'off', spellcheck: 'false' });
    id.value = editing.id;
    id.readOnly = !!editing.zone;
    const name = h('input', { type: 'text', name: 'zone-name', required: true, autocomplete: 'off' });
    name.value = editing.name;
    const kinds = new Set([...KNOWN_KINDS, ...this.cityMap.zones().features.map((z) => String(z.properties.kind ?? '')).filter(Boolean)]);
    const listId = uid('zone-kinds');
    const kind = h('input', { type: 'text', name: 'zone-kind', required: true, autocomplete: 'off', list: listId });
    kind.value = editing.zoneKind;
    const width = h('input', { type: 'number', name: 'zone-width', min: '1', step: '1', inputMode: 'numeric' });
    width.value = editing.width;
    const keep = () => {
      editing.id = id.value.trim();
      editing.name = name.value.trim();
      editing.zoneKind = kind.value.trim();
      editing.width = width.value;
    };
    // A new zone's id follows its name until the id is typed in.
    let idTouched = !!editing.id;
    id.addEventListener('input', () => (idTouched = true));
    name.addEventListener('input', () => {
      if (!editing.zone && !idTouched) id.value = slug(name.value);
      keep();
    });
    for (const input of [id, kind]) input.addEventListener('input', keep);
    width.addEventListener('input', () => {
      keep();
      draw.setWidth(Number(width.value) || null);
    });
    const finishing = draw.drawing;
    form.append(
      h('p', { className: 'hint' }, t(finishing ? (editing.kind === 'polygon' ? 'zones_hint_area' : 'zones_hint_corridor') : 'zones_hint_edit')),
      h('p', { className: 'zone-points muted' }, t('zones_points', { n: draw.count })),
      field(t('zones_name'), name),
      field(t('zones_id'), id),
      h('div', { className: 'field' }, h('label', { for: (kind.id = uid('field')) }, t('zones_kind')), kind, h('datalist', { id: listId }, [...kinds].sort().map((k) => h('option', { value: k })))),
      editing.kind === 'line' ? field(t('zones_width'), width) : '',
      h(
        'div',
        { className: 'form-buttons' },
        finishing
          ? h('button', { type: 'button', 'data-zone-finish': '', disabled: draw.count < (editing.kind === 'polygon' ? 3 : 2), onclick: () => draw.finish() }, t('zones_finish'))
          : '',
        h('button', { type: 'submit', className: 'primary', disabled: this.busy }, t('zones_save')),
        h('button', { type: 'button', onclick: () => draw.cancel() }, t('cancel')),
      ),
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      keep();
      void this.save(editing);
    });
    return form;
  }

  private async save(editing: Editing): Promise<void> {
    const draw = this.cityMap.draw;
    if (draw.drawing) draw.finish();
    const geometry = draw.geometry();
    const problem = !geometry
      ? t('zones_need_points', { n: editing.kind === 'polygon' ? 3 : 2 })
      : !editing.name
        ? t('zones_need_name')
        : !ID_PATTERN.test(editing.id)
          ? t('zones_bad_id')
          : !editing.zoneKind
            ? t('zones_need_kind')
            : editing.kind === 'line' && !(Number(editing.width) > 0)
              ? t('zones_need_width')
              : !editing.zone && this.cityMap.zones().features.some((z) => String(z.properties.id ?? z.id) === editing.id)
                ? t('zones_id_taken', { id: editing.id })
                : null;
    if (problem || !geometry) {
      this.say(problem ?? '', true);
      this.render();
      return;
    }
    const zone: ZoneFeature = {
      type: 'Feature',
      geometry,
      properties: { name: editing.name, kind: editing.zoneKind, ...(editing.kind === 'line' ? { width_m: Number(editing.width) } : {}) },
    };
    this.busy = true;
    this.render();
    try {
      await api.putZone(editing.id, zone);
      draw.stop();
      this.editing = null;
      this.say(t('zones_saved', { name: editing.name }), false);
      await this.cityMap.reloadZones().catch((e) => this.say(messageOf(e), true));
    } catch (e) {
      this.refused(e);
    } finally {
      this.busy = false;
    }
    this.render();
  }

  private async remove(id: string, name: string): Promise<void> {
    this.busy = true;
    this.render();
    try {
      await api.deleteZone(id);
      this.say(t('zones_deleted', { name }), false);
      await this.cityMap.reloadZones().catch((e) => this.say(messageOf(e), true));
    } catch (e) {
      // 409: a rule uses the zone; the node's message names it.
      this.refused(e);
    } finally {
      this.busy = false;
      this.confirmDelete = null;
    }
    this.render();
  }

  dispose(): void {
    if (this.editing) this.cityMap.draw.stop();
  }
}

/** A zone id from its name: lower-case ASCII words joined by `-` (a generated id otherwise). */
export function slug(name: string): string {
  const s = name
    .normalize('NFKD')
    // The accents NFKD split off the letters: dropped, not turned into dashes (é → e, not e-).
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+/, '')
    // Cut before trimming the end, so that a cut after a dash does not leave it dangling.
    .slice(0, 48)
    .replace(/-+$/, '');
  return s || `zone-${Date.now().toString(36)}`;
}
