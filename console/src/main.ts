// Start-up: the login form, or the console for a signed-in user — the desk (map, queue,
// alert panel) on wide screens, the responder's "my alerts" list on phones.

import './style.css';

import { api, login, messageOf, setToken, token, whenUnauthorized } from './api';
import { loadAlerts, store } from './alerts';
import { forgetLayers } from './cityindex';
import { makeSession, type Session } from './context';
import { startCountdownTicker } from './countdown';
import { AuditPage, canAudit } from './audit';
import { SharingPage } from './sharing';
import { DashboardPage } from './dashboard';
import { field, h, option } from './dom';
import { locale, onLocaleChange, setLocale, t, tCode, type Locale, type MessageKey } from './i18n';
import { installKeyboard } from './keyboard';
import type { CityMap, MapTestHook } from './map';
import { Panel } from './panel';
import { Queue } from './queue';
import { ResponderView } from './responder';
import { currentRoute, href, onRouteChange, PAGES, type Route } from './router';
import { RulesPage } from './rules';
import { canSearch, SearchPage } from './search';
import { startStream, stopStream, type LiveState } from './stream';
import { canEditZones, ZoneEditor } from './zones';

declare global {
  interface Window {
    /** Read by the end-to-end tests (tests/e2e.mjs) and the benchmark (tests/fps.mjs). */
    __cityward?: { map: MapTestHook | null; alerts: () => number; mode: () => string; me: () => string | null; page: () => string };
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
  forgetLayers();
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
  window.__cityward = { map: null, alerts: () => 0, mode: () => 'login', me: () => null, page: () => 'login' };
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
  const nav = h('nav', { className: 'pages' });
  let route: Route = currentRoute();
  const renderNav = () => {
    nav.setAttribute('aria-label', t('nav_label'));
    nav.replaceChildren(
      ...PAGES.filter((page) => (page !== 'search' || canSearch(session)) && (page !== 'audit' || canAudit(session))).map((page) =>
        h('a', { href: href(page), 'data-page': page, 'aria-current': route.page === page ? 'page' : null }, t(`nav_${page}`)),
      ),
    );
  };
  const helpDialog = h('dialog', { className: 'help', 'aria-labelledby': 'help-heading' });
  const renderHeader = () => {
    const me = session.me;
    const where = me.jurisdiction === 'city' ? t('jurisdiction_city') : me.unit_name ?? me.unit ?? '';
    header.replaceChildren(
      h('span', { className: 'brand' }, t('app_title')),
      live,
      mode === 'desk' ? nav : '',
      h('div', { className: 'spacer' }),
      h('span', { className: 'who' }, t('signed_in_as', { user: me.username, role: tCode('role', me.role) }), where ? ` · ${where}` : ''),
      languageSwitch(),
      h('button', { type: 'button', className: 'secondary', 'aria-label': t('shortcuts_heading'), title: t('shortcuts_heading'), onclick: () => showHelp() }, '?'),
      h('button', { type: 'button', className: 'secondary', 'data-action': 'logout', onclick: () => logout() }, t('logout')),
    );
    showLive();
    renderNav();
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
  let zoneEditor: ZoneEditor | null = null;
  let mapWaiters: (() => void)[] = [];
  let rules: RulesPage | null = null;
  let search: SearchPage | null = null;
  let dashboard: DashboardPage | null = null;
  let audit: AuditPage | null = null;
  let sharing: SharingPage | null = null;
  const mapHooks = { map: () => cityMap };
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
    if (cityMap) return;
    cityMap = new CityMap(mapBox, session, {
      openAlert: (id) => {
        if (route.page !== 'desk') location.hash = href('desk');
        queue.select(id);
        openAlert(id);
      },
    });
    if (canEditZones(session)) {
      zoneEditor = new ZoneEditor(cityMap);
      mapBox.appendChild(zoneEditor.el);
    }
    cityMap.setCommunityCounts(store.all());
    cityMap.setActive(route.page !== 'dashboard' && route.page !== 'audit' && route.page !== 'sharing');
    queue.render();
    if (window.__cityward) window.__cityward.map = cityMap.testHook;
    for (const waiter of mapWaiters.splice(0)) waiter();
  };
  /** Runs `callback` once the map exists (the pages that draw on it may come first). */
  const withMap = (callback: () => void) => {
    if (cityMap) callback();
    else mapWaiters.push(callback);
  };

  // The pages: the desk's queue and panel, or rules, search or the dashboard beside (or
  // instead of) the map. The map stays the same element throughout, so it keeps its state.
  const showPage = (next: Route) => {
    const previous = route.page;
    route = next;
    if (previous === 'search' && next.page !== 'search') search?.hide();
    desk.dataset.page = next.page;
    if (next.page === 'desk') {
      desk.replaceChildren(mapBox, queue.el, panel.el);
    } else if (next.page === 'rules') {
      rules ??= new RulesPage(session, mapHooks);
      desk.replaceChildren(mapBox, rules.el);
      rules.show(next.param);
    } else if (next.page === 'search' && !canSearch(session)) {
      desk.replaceChildren(mapBox, h('section', { className: 'search-page' }, h('p', { className: 'muted', role: 'status' }, t('search_not_for_role'))));
    } else if (next.page === 'search') {
      search ??= new SearchPage(mapHooks, session.me);
      desk.replaceChildren(mapBox, search.el);
      const page = search;
      withMap(() => {
        page.relabel();
        page.show();
      });
    } else if (next.page === 'audit') {
      if (canAudit(session)) {
        audit ??= new AuditPage();
        desk.replaceChildren(audit.el);
        audit.show();
      } else {
        desk.replaceChildren(h('section', { className: 'audit-page' }, h('p', { className: 'muted', role: 'status' }, t('audit_not_for_role'))));
      }
    } else if (next.page === 'sharing') {
      sharing ??= new SharingPage(session);
      desk.replaceChildren(sharing.el);
      sharing.show();
    } else {
      dashboard ??= new DashboardPage(session);
      desk.replaceChildren(dashboard.el);
      dashboard.show();
    }
    cityMap?.setActive(next.page !== 'dashboard' && next.page !== 'audit' && next.page !== 'sharing');
    renderNav();
  };

  let mode: 'desk' | 'phone' = PHONE.matches ? 'phone' : 'desk';
  const layout = () => {
    mode = PHONE.matches ? 'phone' : 'desk';
    root.dataset.mode = mode;
    renderHeader();
    root.replaceChildren(header, mode === 'desk' ? desk : phone, helpDialog);
    responder.setActive(mode === 'phone');
    if (mode === 'desk') {
      showPage(route);
      void ensureMap();
    } else {
      cityMap?.setActive(false);
    }
  };
  cleanups.push(onRouteChange((next) => mode === 'desk' && showPage(next)));
  const onMedia = () => layout();
  PHONE.addEventListener('change', onMedia);
  cleanups.push(() => PHONE.removeEventListener('change', onMedia));

  window.__cityward = { map: null, alerts: () => store.size, mode: () => mode, me: () => session.me.username, page: () => route.page };
  layout();

  cleanups.push(
    onLocaleChange(() => {
      renderHeader();
      mapBox.setAttribute('aria-label', t('map_label'));
      queue.renderFrame();
      panel.rerender();
      responder.renderFrame();
      cityMap?.relabel();
      zoneEditor?.relabel();
      rules?.relabel();
      search?.relabel();
      dashboard?.relabel();
      audit?.relabel();
      sharing?.relabel();
      if (helpDialog.open) renderHelp();
    }),
  );
  cleanups.push(
    installKeyboard({
      active: () => mode === 'desk' && route.page === 'desk' && !helpDialog.open,
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
    rules?.dispose();
    zoneEditor?.dispose();
    cityMap?.destroy();
    cityMap = null;
    mapWaiters = [];
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
