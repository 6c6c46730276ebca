// Photos from the scene, attached to an alert when resolving it: the phone's camera (or a
// file) through an `<input type=file capture>`, each photo sent as it is chosen
// (`POST /api/v1/alerts/{id}/photos`, the raw image), so that a slow upload is under way
// while the note is typed. The image goes as taken; nothing is recompressed.

import { api, messageOf, unavailable } from './api';
import { h, uid } from './dom';
import { formatDateTime, t } from './i18n';
import type { AlertPhoto } from './types';

const TYPES = ['image/jpeg', 'image/png', 'image/webp'];

interface Photo {
  name: string;
  preview: string;
  state: 'sending' | 'sent' | 'failed';
  message: string;
}

export class PhotoPicker {
  readonly el: HTMLElement;
  private readonly input: HTMLInputElement;
  private readonly list: HTMLElement;
  private readonly photos: Photo[] = [];

  constructor(readonly alertId: string) {
    this.input = h('input', { type: 'file', accept: 'image/*', capture: 'environment', id: uid('photo'), className: 'photo-input', 'data-photo-input': '' });
    this.input.addEventListener('change', () => {
      for (const file of this.input.files ?? []) void this.send(file);
      this.input.value = '';
    });
    this.list = h('ul', { className: 'photos' });
    this.el = h('div', { className: 'photo-picker' });
    this.render();
  }

  /** Whether a photo is still on its way (resolving now would leave it behind). */
  sending(): boolean {
    return this.photos.some((p) => p.state === 'sending');
  }

  render(): void {
    this.el.replaceChildren(
      h('label', { for: this.input.id, className: 'button big photo-button' }, t('photo_add')),
      this.input,
      this.list,
    );
    this.renderList();
  }

  private renderList(): void {
    this.list.replaceChildren(
      ...this.photos.map((p) =>
        h(
          'li',
          { 'data-state': p.state },
          h('img', { src: p.preview, alt: t('photo_alt', { name: p.name }) }),
          h('span', { className: p.state === 'failed' ? 'error' : p.state === 'sent' ? 'ok' : 'muted', role: p.state === 'failed' ? 'alert' : 'status' }, p.message),
        ),
      ),
    );
  }

  private async send(file: File): Promise<void> {
    const photo: Photo = { name: file.name, preview: URL.createObjectURL(file), state: 'sending', message: t('photo_sending') };
    this.photos.push(photo);
    if (!TYPES.includes(file.type)) {
      photo.state = 'failed';
      photo.message = t('photo_type', { type: file.type || '?' });
      this.renderList();
      return;
    }
    this.renderList();
    try {
      await api.photo(this.alertId, file);
      photo.state = 'sent';
      photo.message = t('photo_sent');
    } catch (e) {
      photo.state = 'failed';
      photo.message = unavailable(e) ? t('photo_unavailable') : t('photo_failed', { message: messageOf(e) });
    }
    this.renderList();
  }

  dispose(): void {
    for (const p of this.photos) URL.revokeObjectURL(p.preview);
  }
}

/**
 * The photos attached to an alert, on its page. Each is fetched once with the caller's
 * token (the node audits every view) and shown from a local object URL; a photo that
 * cannot be fetched says so in its place.
 */
export class PhotoGallery {
  readonly el: HTMLElement;
  private readonly shown = new Map<string, { figure: HTMLElement; url: string | null }>();
  private disposed = false;

  constructor(photos: AlertPhoto[]) {
    this.el = h('section', { className: 'photo-gallery', 'data-photos': String(photos.length) });
    this.update(photos);
  }

  /** Shows `photos`, fetching only those not shown yet. */
  update(photos: AlertPhoto[]): void {
    for (const photo of photos) {
      if (this.shown.has(photo.id)) continue;
      const caption = h('figcaption', {}, `${photo.by} · ${formatDateTime(photo.at)}`);
      const figure = h('figure', { 'data-photo': photo.id }, h('span', { className: 'muted' }, t('photo_loading')), caption);
      const entry = { figure, url: null as string | null };
      this.shown.set(photo.id, entry);
      void api
        .blob(photo.url)
        .then((blob) => {
          if (this.disposed) return;
          entry.url = URL.createObjectURL(blob);
          const img = h('img', { src: entry.url, alt: t('photo_by', { by: photo.by, at: formatDateTime(photo.at) }), loading: 'lazy' });
          figure.replaceChildren(h('a', { href: entry.url, target: '_blank', rel: 'noopener' }, img), caption);
        })
        .catch((e) => {
          if (!this.disposed) figure.replaceChildren(h('span', { className: 'error', role: 'alert' }, t('photo_load_failed', { message: messageOf(e) })), caption);
        });
    }
    this.el.dataset.photos = String(photos.length);
    this.el.replaceChildren(
      h('h3', {}, t('photos_heading', { n: photos.length })),
      h('div', { className: 'photo-grid' }, photos.map((p) => this.shown.get(p.id)?.figure ?? '')),
    );
  }

  dispose(): void {
    this.disposed = true;
    for (const { url } of this.shown.values()) if (url) URL.revokeObjectURL(url);
    this.shown.clear();
  }
}
