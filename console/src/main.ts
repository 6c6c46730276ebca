// Start-up: the login form, or the console for a signed-in user — the desk (map, queue,
// alert panel) on wide screens, the responder's "my alerts" list on phones.

import './style.css';

import { api, login, messageOf, setToken, token, whenUnauthorized } from './api';
import { loadAlerts, store } from './alerts';
import { makeSession, type Session } from './context';
import { startCountdownTicker } from './countdown';
import { field, h, option } from './dom';
import { locale, onLocaleChange, setLocale, t, tCode, type Locale, type MessageKey } from './i18n';
import { installKeyboard } from './keyboard';
import type { CityMap, MapTestHook } from './map';
import { Panel } from './panel';
import { Queue } from './queue';
import { ResponderView } from './responder';
import { startStream, stopStream, type LiveState } from './stream';

declare global {
  interface Window {
    /** Read by the end-to-end tests (tests/e2e.mjs). */
    __cityward?: { map: MapTestHook | null; alerts: () => number; mode: () => string; me: () => string | null };
  }
}

const PHONE = window.matchMedia('(max-width: 700px)');
const root = document.getElementById('app') as HTMLElement;
let teardown: (() => void) | null = null;

function boot(): void {
  setLocale(locale());
  whenUnauthorized(() => showLogin());
  if (token()) void showConsole();
  else showLogin();
}

function languageSwitch(): HTMLElement {
  const select = h(
    'select',
    { name: 'language', className: 'language' },
    option('en', 'English', locale() === 'en'),
    option('zh-CN', '简体中文', locale() === 'zh-CN'),
  );
  select.addEventListener('change', () => setLocale(select.value as Locale));
  return field(t('language'), select);
}

function showLogin(message?: string): void {
  teardown?.();
  teardown = null;
  stopStream();
  store.clear();
  const render = () => {
    const username = h('input', { type: 'text', name: 'username', autocomplete: 'username', required: true });
    const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
    const error = h('p', { className: 'error', role: 'alert' }, message ?? '');
    const submit = h('button', { type: 'submit', className: 'primary big' }, t('login_submit'));
    const form = h(
      'form',
      { className: 'login-form', 'aria-labelledby': 'login-heading' },
      h('h1', { id: 'login-heading' }, t('login_heading')),
      field(t('login_username'), username),
      field(t('login_password'), password),
      error,
      submit,
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      submit.disabled = true;
      login(username.value.trim(), password.value)
        .then((answer) => {
          setToken(answer.token);
          return showConsole();
        })
        .catch((e) => {
          error.textContent = `${t('login_failed')}: ${messageOf(e)}`;
          submit.disabled = false;
        });
    });
    root.replaceChildren(
      h('header', { className: 'topbar' }, h('span', { className: 'brand' }, t('app_title')), h('div', { className: 'spacer' }), languageSwitch()),
      h('main', { className: 'login' }, form),
    );
    username.focus();
  };
  render();
  const stop = onLocaleChange(render);
  teardown = stop;
  window.__cityward = { map: null, alerts: () => 0, mode: () => 'login', me: () => null };
}

async function showConsole(): Promise<void> {
  root.replaceChildren(h('p', { className: 'loading' }, t('loading')));
  let session: Session;
  try {
    const [me, city] = await Promise.all([api.me(), api.city()]);
    session = makeSession(me, city);
  } catch (e) {
    if (!token()) return; // a 401 already went back to the login form
    setToken(null);
    showLogin(t('error_generic', { detail: messageOf(e) }));
    return;
  }
  teardown?.();
  const cleanups: (() => void)[] = [];

  const live = h('span', { className: 'live', role: 'status' });
  let liveState: LiveState = 'disconnected';
  const showLive = () => {
    live.textContent = liveState === 'connected' ? t('live_connected') : liveState === 'reloaded' ? t('live_reloaded') : t('live_disconnected');
    live.dataset.state = liveState;
  };
  const header = h('header', { className: 'topbar' });
  const helpDialog = h('dialog', { className: 'help', 'aria-labelledby': 'help-heading' });
  const renderHeader = () => {
    const me = session.me;
    const where = me.jurisdiction === 'city' ? t('jurisdiction_city') : me.unit_name ?? me.unit ?? '';
    header.replaceChildren(
      h('span', { className: 'brand' }, t('app_title')),
      live,
      h('div', { className: 'spacer' }),
      h('span', { className: 'who' }, t('signed_in_as', { user: me.username, role: tCode('role', me.role) }), where ? ` · ${where}` : ''),
      languageSwitch(),
      h('button', { type: 'button', className: 'secondary', 'aria-label': t('shortcuts_heading'), title: t('shortcuts_heading'), onclick: () => showHelp() }, '?'),
      h('button', { type: 'button', className: 'secondary', 'data-action': 'logout', onclick: () => logout() }, t('logout')),
    );
    showLive();
  };
  const renderHelp = () => {
    const keys: [string, MessageKey][] = [
      ['j', 'key_j'],
      ['k', 'key_k'],
      ['Enter', 'key_enter'],
      ['a', 'key_a'],
      ['d', 'key_d'],
      ['r', 'key_r'],
      ['Esc', 'key_esc'],
      ['?', 'key_help'],
    ];
    helpDialog.replaceChildren(
      h('h2', { id: 'help-heading' }, t('shortcuts_heading')),
      h('dl', { className: 'keys' }, keys.map(([key, label]) => [h('dt', {}, h('kbd', {}, key)), h('dd', {}, t(label))])),
      h('form', { method: 'dialog' }, h('button', { type: 'submit', className: 'primary' }, t('close'))),
    );
  };
  const showHelp = () => {
    renderHelp();
    if (!helpDialog.open) helpDialog.showModal();
  };

  // The desk: map, queue and alert panel. The map is created only when first shown, so a
  // phone never pays for WebGL.
  const mapBox = h('section', { className: 'map', 'aria-label': t('map_label') });
  let cityMap: CityMap | null = null;
  const panel = new Panel(session, {
    closed: () => {
      desk.classList.remove('with-panel');
      cityMap?.resize();
      queue.el.querySelector<HTMLElement>('.alert-row.selected .row-open')?.focus();
    },
    focusAlert: (alert) => cityMap?.focus(alert),
  });
  const openAlert = (id: string, form: 'dispatch' | 'resolve' | null = null) => {
    desk.classList.add('with-panel');
    cityMap?.resize();
    void panel.open(id, form);
  };
  const queue = new Queue(session, {
    open: (id) => openAlert(id),
    selected: (id) => cityMap?.setSelected(id),
    filtered: (alerts) => {
      cityMap?.setAlerts(alerts);
      cityMap?.setCommunityCounts(store.all());
    },
  });
  const desk = h('main', { className: 'desk' }, mapBox, queue.el, panel.el);
  const responder = new ResponderView(session);
  const phone = h('main', { className: 'phone' }, responder.el);

  const ensureMap = async () => {
    if (cityMap) return;
    const { CityMap } = await import('./map');
    cityMap = new CityMap(mapBox, session.city, { openAlert: (id) => {
      queue.select(id);
      openAlert(id);
    } });
    const filtered = store.all();
    cityMap.setCommunityCounts(filtered);
    queue.render();
    if (window.__cityward) window.__cityward.map = cityMap.testHook;
  };

  let mode: 'desk' | 'phone' = PHONE.matches ? 'phone' : 'desk';
  const layout = () => {
    mode = PHONE.matches ? 'phone' : 'desk';
    root.dataset.mode = mode;
    root.replaceChildren(header, mode === 'desk' ? desk : phone, helpDialog);
    responder.setActive(mode === 'phone');
    if (mode === 'desk') void ensureMap();
  };
  const onMedia = () => layout();
  PHONE.addEventListener('change', onMedia);
  cleanups.push(() => PHONE.removeEventListener('change', onMedia));

  window.__cityward = { map: null, alerts: () => store.size, mode: () => mode, me: () => session.me.username };
  renderHeader();
  layout();

  cleanups.push(
    onLocaleChange(() => {
      renderHeader();
      mapBox.setAttribute('aria-label', t('map_label'));
      queue.renderFrame();
      panel.rerender();
      responder.renderFrame();
      cityMap?.relabel();
      if (helpDialog.open) renderHelp();
    }),
  );
  cleanups.push(
    installKeyboard({
      active: () => mode === 'desk' && !helpDialog.open,
      move: (delta) => queue.move(delta),
      open: () => {
        const id = queue.selected();
        if (id) openAlert(id);
      },
      act: (action) => {
        const id = queue.selected() ?? panel.currentAlertId();
        if (!id) return;
        if (action === 'ack') {
          desk.classList.add('with-panel');
          void panel.act(id, 'ack');
        } else {
          openAlert(id, action);
        }
      },
      escape: () => panel.close(),
      help: () => showHelp(),
    }),
  );
  startCountdownTicker();

  const logout = () => {
    setToken(null);
    showLogin();
  };
  cleanups.push(queue.dispose, panel.dispose, responder.dispose);
  teardown = () => {
    for (const cleanup of cleanups) cleanup();
    cityMap?.destroy();
    cityMap = null;
  };

  try {
    await loadAlerts();
  } catch (e) {
    if (!token()) return;
    live.textContent = t('error_generic', { detail: messageOf(e) });
  }
  startStream((state) => {
    liveState = state;
    showLive();
  });
}

boot();
