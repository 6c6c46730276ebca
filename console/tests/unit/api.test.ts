import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { api, ApiError, login, messageOf, setToken, token, unavailable, whenUnauthorized } from '../../src/api';

const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

let fetched: { url: string; init: RequestInit }[] = [];
function answer(...responses: (Response | Error)[]) {
  fetched = [];
  vi.stubGlobal(
    'fetch',
    vi.fn(async (url: string, init: RequestInit) => {
      fetched.push({ url, init });
      const next = responses.shift() ?? json(200, { items: [], next: null });
      if (next instanceof Error) throw next;
      return next;
    }),
  );
}

beforeEach(() => {
  setToken(null);
  whenUnauthorized(() => undefined);
});
afterEach(() => vi.unstubAllGlobals());

describe('unavailable', () => {
  // An older node answers a path it does not have with its fallback 404 or a 405.
  it('tells an endpoint the node does not have', () => {
    expect(unavailable(new ApiError(404, 'http_404', '404 Not Found'))).toBe(true);
    expect(unavailable(new ApiError(404, 'not_found', 'no such path: /api/v1/stats'))).toBe(true);
    expect(unavailable(new ApiError(405, 'http_405', 'Method Not Allowed'))).toBe(true);
    expect(unavailable(new ApiError(501, 'not_implemented', 'x'))).toBe(true);
  });

  it('does not mistake a missing thing or another failure for it', () => {
    expect(unavailable(new ApiError(404, 'not_found', 'alert `a1` not found'))).toBe(false);
    expect(unavailable(new ApiError(500, 'internal', 'boom'))).toBe(false);
    expect(unavailable(new ApiError(0, 'network', 'fetch failed'))).toBe(false);
    expect(unavailable(new Error('404'))).toBe(false);
  });
});

describe('messageOf', () => {
  it('shows the node’s message, an error’s message, or the thing itself', () => {
    expect(messageOf(new ApiError(409, 'conflict', 'the rule changed since you read it'))).toBe('the rule changed since you read it');
    expect(messageOf(new TypeError('bad'))).toBe('bad');
    expect(messageOf('plain')).toBe('plain');
  });
});

describe('requests', () => {
  it('sends list filters comma-separated and leaves out the empty ones', async () => {
    answer();
    await api.alerts({ status: ['new', 'assigned'], severity: [], category: ['fire.smoke'], region: '', since: '2030-01-01T00:00:00.000Z', limit: 500, cursor: null });
    const url = new URL(fetched[0].url, 'http://node');
    expect(url.pathname).toBe('/api/v1/alerts');
    expect(Object.fromEntries(url.searchParams)).toEqual({ status: 'new,assigned', category: 'fire.smoke', since: '2030-01-01T00:00:00.000Z', limit: '500' });
  });

  it('carries the bearer token once signed in', async () => {
    answer(json(200, {}), json(200, {}));
    await api.me();
    expect(new Headers(fetched[0].init.headers).has('Authorization')).toBe(false);
    setToken('t0k');
    await api.me();
    expect(new Headers(fetched[1].init.headers).get('Authorization')).toBe('Bearer t0k');
    expect(token()).toBe('t0k');
  });

  it('escapes ids in paths', async () => {
    answer(json(200, {}));
    await api.alert('a/b?c');
    expect(fetched[0].url).toBe('/api/v1/alerts/a%2Fb%3Fc');
  });
});

describe('failures', () => {
  it('signs out and returns to the login form on a 401', async () => {
    setToken('expired');
    const back = vi.fn();
    whenUnauthorized(back);
    answer(json(401, { error: { code: 'unauthorized', message: 'the token expired' } }));
    const error = await api.me().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 401, code: 'unauthorized', message: 'the token expired' });
    expect(token()).toBeNull();
    expect(back).toHaveBeenCalledTimes(1);
  });

  it('does not treat a refused sign-in as a lost session', async () => {
    const back = vi.fn();
    whenUnauthorized(back);
    answer(json(401, { error: { code: 'unauthorized', message: 'wrong user name or password' } }));
    await expect(login('u', 'p')).rejects.toMatchObject({ status: 401, message: 'wrong user name or password' });
    expect(back).not.toHaveBeenCalled();
  });

  it('keeps the status line of an answer that is not the node’s JSON', async () => {
    answer(new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }));
    await expect(api.me()).rejects.toMatchObject({ status: 502, code: 'http_502', message: '502 Bad Gateway' });
  });

  it('reports a node it cannot reach as a network error', async () => {
    answer(new TypeError('fetch failed'));
    await expect(api.me()).rejects.toMatchObject({ status: 0, code: 'network', message: 'fetch failed' });
  });
});
