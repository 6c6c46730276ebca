import { describe, expect, it } from 'vitest';

import { countdownState } from '../../src/countdown';
import { formatCountdown } from '../../src/i18n';

const DUE = Date.parse('2030-01-01T12:00:00Z');
const before = (seconds: number) => DUE - seconds * 1000;

describe('formatCountdown', () => {
  it('shows minutes and seconds under an hour, both two-digit', () => {
    expect(formatCountdown(0)).toBe('00:00');
    expect(formatCountdown(5)).toBe('00:05');
    expect(formatCountdown(90)).toBe('01:30');
    expect(formatCountdown(59 * 60 + 59)).toBe('59:59');
  });

  it('adds hours from an hour on', () => {
    expect(formatCountdown(3600)).toBe('1:00:00');
    expect(formatCountdown(3661)).toBe('1:01:01');
    expect(formatCountdown(26 * 3600 + 5)).toBe('26:00:05');
  });

  // A countdown never shows more time than is left: 59.9 s is still "00:59".
  it('rounds down, and never below zero', () => {
    expect(formatCountdown(59.9)).toBe('00:59');
    expect(formatCountdown(-42)).toBe('00:00');
  });
});

describe('countdownState', () => {
  it('names the deadline that is running', () => {
    expect(countdownState('ack', DUE, before(90)).text).toBe('escalates in 01:30');
    expect(countdownState('arrive', DUE, before(90)).text).toBe('arrival due in 01:30');
    expect(countdownState('progress', DUE, before(3725)).text).toBe('progress due in 1:02:05');
  });

  it('is neither soon nor overdue a minute or more ahead', () => {
    expect(countdownState('ack', DUE, before(60))).toEqual({ text: 'escalates in 01:00', overdue: false, soon: false });
  });

  it('is soon under a minute ahead', () => {
    expect(countdownState('ack', DUE, before(59.5))).toEqual({ text: 'escalates in 00:59', overdue: false, soon: true });
    expect(countdownState('ack', DUE, before(0.2))).toMatchObject({ overdue: false, soon: true });
  });

  it('is overdue from the deadline on, and says so instead of a time', () => {
    expect(countdownState('ack', DUE, DUE)).toEqual({ text: 'overdue', overdue: true, soon: false });
    expect(countdownState('arrive', DUE, DUE + 3_600_000)).toEqual({ text: 'overdue', overdue: true, soon: false });
  });

  it('falls back to the escalation label for a kind it does not know', () => {
    expect(countdownState('bogus' as 'ack', DUE, before(10)).text).toBe('escalates in 00:10');
  });
});
