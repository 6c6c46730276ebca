import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import source from '../../src/i18n.ts?raw';
import { browserLocale, formatCountdown, locale, onLocaleChange, setLocale, t, tCode, type Locale, type MessageKey } from '../../src/i18n';
import { SEVERITIES, STATUSES } from '../../src/types';

// The dictionaries are not exported: their keys are read from the source, their texts
// through t() in each language, as the console shows them.
function keysOf(start: string, end: string): string[] {
  const from = source.indexOf(start);
  const to = source.indexOf(end, from);
  expect(from, start).toBeGreaterThanOrEqual(0);
  return [...source.slice(from + start.length, to).matchAll(/^\s+([A-Za-z0-9_]+):/gm)].map((m) => m[1]);
}
const EN = keysOf('const en = {', '\n} as const;');
const ZH = keysOf('const zh: Record<MessageKey, string> = {', '\n};');
const LOCALES: Locale[] = ['en', 'zh-CN'];

function textIn(lang: Locale, key: string): string {
  setLocale(lang);
  return t(key as MessageKey);
}
const placeholders = (text: string) => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

beforeAll(() => {
  // setLocale sets the page's language and title.
  vi.stubGlobal('document', { documentElement: { lang: '' }, title: '' });
});
afterAll(() => {
  setLocale('en');
  vi.unstubAllGlobals();
});

describe('dictionaries', () => {
  it('were found in the source', () => {
    expect(EN.length).toBeGreaterThan(100);
    expect(EN).toContain('app_title');
  });

  it('have every key once, and the same keys in both languages', () => {
    expect(new Set(EN).size).toBe(EN.length);
    expect(new Set(ZH).size).toBe(ZH.length);
    expect([...ZH].sort()).toEqual([...EN].sort());
  });

  it('have a text for every key in both languages', () => {
    for (const lang of LOCALES) {
      const empty = EN.filter((key) => !textIn(lang, key).trim());
      expect(empty, lang).toEqual([]);
    }
  });

  // A placeholder missing in one language shows the raw `{n}`, or drops the number.
  it('use the same placeholders in both languages', () => {
    const differ = EN.filter((key) => placeholders(textIn('en', key)).join() !== placeholders(textIn('zh-CN', key)).join()).map(
      (key) => `${key}: en {${placeholders(textIn('en', key))}} zh-CN {${placeholders(textIn('zh-CN', key))}}`,
    );
    expect(differ).toEqual([]);
  });

  it('name every status, severity, role and default disposition in both languages', () => {
    const codes: [Parameters<typeof tCode>[0], readonly string[]][] = [
      ['status', STATUSES],
      ['severity', SEVERITIES],
      ['role', ['admin', 'analyst', 'dispatcher', 'responder', 'auditor', 'reader', 'ingest']],
      // crates/server/src/default_config.toml
      ['disp', ['confirmed_incident', 'false_alarm', 'device_fault', 'duplicate', 'referred', 'test']],
    ];
    for (const lang of LOCALES) {
      setLocale(lang);
      for (const [prefix, list] of codes) {
        const missing = list.filter((code) => !EN.includes(`${prefix}_${code}`));
        expect(missing, `${prefix} in ${lang}`).toEqual([]);
        expect(new Set(list.map((code) => tCode(prefix, code))).size, `${prefix} in ${lang}`).toBe(list.length);
      }
    }
  });
});

describe('t', () => {
  it('fills in placeholders and leaves those it is not given', () => {
    setLocale('en');
    const template = t('queue_count');
    expect(placeholders(template)).toEqual(['shown', 'total']);
    const filled = t('queue_count', { shown: 3, total: 12 });
    expect(filled).toContain('3');
    expect(filled).toContain('12');
    expect(placeholders(filled)).toEqual([]);
    expect(placeholders(t('queue_count', { shown: 3 }))).toEqual(['total']);
  });

  it('answers in the language set, and tells the page and the views', () => {
    const en = textIn('en', 'status_on_scene');
    const zh = textIn('zh-CN', 'status_on_scene');
    expect(zh).not.toBe(en);
    const heard: Locale[] = [];
    const stop = onLocaleChange(() => heard.push(locale()));
    setLocale('en');
    expect(t('status_on_scene')).toBe(en);
    setLocale('zh-CN');
    expect(t('status_on_scene')).toBe(zh);
    expect(document.documentElement.lang).toBe('zh-CN');
    expect(document.title).toBe(t('app_title'));
    expect(localStorage.getItem('cityward.locale')).toBe('zh-CN');
    stop();
    setLocale('en');
    expect(heard).toEqual(['en', 'zh-CN']);
  });
});

describe('tCode', () => {
  it('shows a code it has no words for as it is, and nothing for no code', () => {
    setLocale('en');
    expect(tCode('status', 'on_scene')).toBe(t('status_on_scene'));
    expect(tCode('disp', 'site_specific_code')).toBe('site_specific_code');
    expect(tCode('role', undefined)).toBe('');
    expect(tCode('role', null)).toBe('');
  });
});

describe('browserLocale', () => {
  it('gives Chinese for any Chinese first language, else English', () => {
    expect(browserLocale(['zh-CN'])).toBe('zh-CN');
    expect(browserLocale(['zh-TW', 'en'])).toBe('zh-CN');
    expect(browserLocale(['ZH'])).toBe('zh-CN');
    expect(browserLocale(['en-US', 'zh-CN'])).toBe('en');
    expect(browserLocale(['fr'])).toBe('en');
  });
});

describe('formatCountdown', () => {
  it('is the same in both languages', () => {
    setLocale('zh-CN');
    expect(formatCountdown(125)).toBe('02:05');
    setLocale('en');
  });
});
