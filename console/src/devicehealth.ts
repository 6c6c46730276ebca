// Device health on the map: devices with an open maintenance ticket
// (`GET /api/v1/city/devices/health`) are drawn differently from healthy ones — an offline
// device as a hollow ring, one with a fault (low battery, tamper…) with a thick amber ring —
// so that shape, not colour alone, tells them apart. Polled every 30 s while the device
// layer is on screen; the device source is replaced only when the set changes.

import type { GeoJSONSource } from 'maplibre-gl';

import { api } from './api';
import type { FeatureCollection } from './types';

export type Health = 'ok' | 'offline' | 'fault';

export interface HealthLists {
  offline: string[];
  fault: string[];
}

const POLL_MS = 30_000;

/** Health per device id; devices not listed are healthy. */
export function healthIndex(lists: HealthLists): Map<string, Health> {
  const index = new Map<string, Health>();
  for (const id of lists.fault) index.set(id, 'fault');
  // An offline device cannot report a fault: offline wins.
  for (const id of lists.offline) index.set(id, 'offline');
  return index;
}

/** A stable key of the lists: the source is replaced only when it changes. */
export function healthKey(lists: HealthLists): string {
  return `${[...lists.offline].sort().join(',')}|${[...lists.fault].sort().join(',')}`;
}

/** The devices with their `health` property set from `index`; other properties kept. */
export function withHealth(devices: FeatureCollection, index: Map<string, Health>): FeatureCollection {
  return {
    ...devices,
    features: devices.features.map((f) => ({
      ...f,
      properties: { ...f.properties, health: index.get(String(f.properties.id ?? f.id)) ?? 'ok' },
    })),
  };
}

export class DeviceHealth {
  offline = 0;
  fault = 0;
  private key = '';
  private wanted = false;
  private timer = 0;

  constructor(
    private readonly source: () => GeoJSONSource | undefined,
    private readonly devices: () => FeatureCollection,
    private readonly changed: () => void,
  ) {}

  /** Polls while the device layer is on screen. */
  setWanted(wanted: boolean): void {
    if (wanted === this.wanted) return;
    this.wanted = wanted;
    clearTimeout(this.timer);
    if (wanted) void this.fetch();
  }

  private async fetch(): Promise<void> {
    if (!this.wanted) return;
    try {
      const lists = await api.deviceHealth();
      const key = healthKey(lists);
      if (key !== this.key) {
        this.key = key;
        this.offline = lists.offline.length;
        this.fault = lists.fault.length;
        this.source()?.setData(withHealth(this.devices(), healthIndex(lists)) as GeoJSON.FeatureCollection);
        this.changed();
      }
    } catch {
      // A node without the endpoint or a passing network error: devices stay as drawn,
      // and the next poll tries again.
    }
    if (this.wanted) this.timer = window.setTimeout(() => void this.fetch(), POLL_MS);
  }
}
