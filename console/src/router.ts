// The console's pages, by the URL's hash: `#/` the desk (map, queue, alert), `#/rules`
// (`#/rules/ID` with a rule open), `#/search`, `#/dashboard`, `#/audit`, `#/sharing`.

export type Page = 'desk' | 'rules' | 'search' | 'dashboard' | 'audit' | 'sharing';
export const PAGES: readonly Page[] = ['desk', 'rules', 'search', 'dashboard', 'audit', 'sharing'];

export interface Route {
  page: Page;
  /** What follows the page in the hash, decoded (a rule id). */
  param: string | null;
}

export function currentRoute(hash: string = location.hash): Route {
  const [name, ...rest] = hash.replace(/^#\/?/, '').split('/');
  const page = (PAGES as readonly string[]).includes(name) && name !== 'desk' ? (name as Page) : 'desk';
  const param = rest.length && rest[0] ? decode(rest.join('/')) : null;
  return { page, param };
}

/** A hash typed or pasted by hand may hold a stray `%`: taken as it is rather than failing the page. */
function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

export function href(page: Page, param?: string | null): string {
  const base = page === 'desk' ? '#/' : `#/${page}`;
  return param ? `${base}/${encodeURIComponent(param)}` : base;
}

/** Calls `listener` on every change of the hash; returns the function that stops it. */
export function onRouteChange(listener: (route: Route) => void): () => void {
  const handler = () => listener(currentRoute());
  window.addEventListener('hashchange', handler);
  return () => window.removeEventListener('hashchange', handler);
}

/** Changes the hash without adding a history entry (e.g. the open rule). */
export function replaceRoute(page: Page, param?: string | null): void {
  history.replaceState(null, '', href(page, param));
}
