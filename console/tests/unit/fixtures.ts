// Alerts as the node sends them, with only what a test is about filled in.

import type { Alert, Handling, Status } from '../../src/types';

export function handling(status: Status, over: Partial<Handling> = {}): Handling {
  return { status, owner: 'unit-a', routing: { owner: 'unit-a' }, deadlines: {}, timeline: [], ...over };
}

let seq = 0;
export function alert(over: Partial<Alert> = {}): Alert {
  seq += 1;
  return { id: `a${seq}`, time: '2030-01-01T12:00:00Z', status: 'new', severity: 'medium', ...over };
}

/** An ISO time `seconds` after `base`. */
export function at(base: number, seconds: number): string {
  return new Date(base + seconds * 1000).toISOString();
}
