import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { api } from '../../src/api';
import { followJob } from '../../src/jobs';
import type { Job } from '../../src/types';

const running = (done: number): Job => ({ id: 'j1', kind: 'trial', state: 'running', progress: { done, total: 3 } });
const finished: Job = { id: 'j1', kind: 'trial', state: 'done', result: { alerts: 2 } };

beforeEach(() => vi.useFakeTimers());
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

/** Runs the polls: 500 ms apart, so a minute is more than enough. */
async function settle<T>(promise: Promise<T>): Promise<T> {
  await vi.advanceTimersByTimeAsync(60_000);
  return promise;
}

describe('followJob', () => {
  it('polls until the job leaves running, reporting each state', async () => {
    const job = vi.spyOn(api, 'job').mockResolvedValueOnce(running(1)).mockResolvedValueOnce(running(2)).mockResolvedValueOnce(finished);
    const seen: Job[] = [];
    const end = await settle(followJob(running(0), (j) => seen.push(j), new AbortController().signal));
    expect(end).toEqual(finished);
    expect(seen.map((j) => j.progress?.done ?? j.state)).toEqual([1, 2, 'done']);
    expect(job.mock.calls.every(([id]) => id === 'j1')).toBe(true);
    expect(job).toHaveBeenCalledTimes(3);
  });

  it('waits half a second between polls', async () => {
    const job = vi.spyOn(api, 'job').mockResolvedValue(running(1));
    const controller = new AbortController();
    const following = followJob(running(0), () => undefined, controller.signal);
    await vi.advanceTimersByTimeAsync(499);
    expect(job).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(job).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1000);
    expect(job).toHaveBeenCalledTimes(3);
    controller.abort();
    await settle(following);
  });

  it('does not poll a job that is already over', async () => {
    const job = vi.spyOn(api, 'job');
    expect(await settle(followJob(finished, () => undefined, new AbortController().signal))).toBe(finished);
    expect(job).not.toHaveBeenCalled();
  });

  it('rides out five failed polls in a row, and gives up on the sixth', async () => {
    const lost = new Error('connection reset');
    vi.spyOn(api, 'job')
      .mockRejectedValueOnce(lost)
      .mockRejectedValueOnce(lost)
      .mockRejectedValueOnce(lost)
      .mockRejectedValueOnce(lost)
      .mockRejectedValueOnce(lost)
      .mockResolvedValueOnce(running(2))
      .mockRejectedValue(lost);
    const seen: Job[] = [];
    const following = followJob(running(0), (j) => seen.push(j), new AbortController().signal);
    const outcome = expect(following).rejects.toBe(lost);
    await vi.advanceTimersByTimeAsync(60_000);
    await outcome;
    // The success in between started the count again: 5 + 1 + 6 polls.
    expect(api.job).toHaveBeenCalledTimes(12);
    expect(seen).toEqual([running(2)]);
  });

  it('stops when aborted, answering the last state seen', async () => {
    vi.spyOn(api, 'job').mockResolvedValue(running(1));
    const controller = new AbortController();
    const following = followJob(running(0), () => undefined, controller.signal);
    await vi.advanceTimersByTimeAsync(1200);
    controller.abort();
    const end = await settle(following);
    expect(end).toEqual(running(1));
    expect(api.job).toHaveBeenCalledTimes(2);
  });
});
