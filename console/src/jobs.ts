// Long-running work on the node (a rule trial): started by one call that answers 202 with
// a job, then followed with `GET /api/v1/jobs/{id}` until it is done or failed.

import { api } from './api';
import type { Job } from './types';

const EVERY_MS = 500;
/** Polls that may fail in a row (a node restarting, a dropped connection) before giving up. */
const TOLERATED_FAILURES = 5;

/**
 * Follows `job` until it leaves `running`, telling `progress` after every poll; stops early
 * (answering the last state seen) once `signal` is aborted.
 */
export async function followJob<R>(job: Job<R>, progress: (job: Job<R>) => void, signal: AbortSignal): Promise<Job<R>> {
  let current = job;
  let failures = 0;
  while (current.state === 'running' && !signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, EVERY_MS));
    if (signal.aborted) break;
    try {
      current = await api.job<R>(job.id);
      failures = 0;
    } catch (e) {
      failures += 1;
      if (failures > TOLERATED_FAILURES) throw e;
      continue;
    }
    progress(current);
  }
  return current;
}
