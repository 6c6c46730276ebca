import { describe, expect, it } from 'vitest';

import { healthIndex, healthKey, withHealth } from '../../src/devicehealth';
import type { FeatureCollection } from '../../src/types';

const devices: FeatureCollection = {
  type: 'FeatureCollection',
  features: ['d1', 'd2', 'd3'].map((id) => ({
    type: 'Feature',
    id,
    geometry: { type: 'Point', coordinates: [121.4, 31.2] },
    properties: { id, kind: 'smoke', grid: 'g1' },
  })),
};

describe('device health', () => {
  it('marks listed devices and takes every other one as working', () => {
    const marked = withHealth(devices, healthIndex({ offline: ['d2'], fault: ['d3'] }));
    expect(marked.features.map((f) => f.properties.health)).toEqual(['ok', 'offline', 'fault']);
    // The rest of each device is kept, and the layer it came from is not changed.
    expect(marked.features[1].properties.kind).toBe('smoke');
    expect(devices.features[1].properties.health).toBeUndefined();
  });

  it('shows a device that is both offline and faulty as offline', () => {
    expect(healthIndex({ offline: ['d1'], fault: ['d1'] }).get('d1')).toBe('offline');
  });

  it('keys the lists by content, not by order, so an unchanged answer redraws nothing', () => {
    expect(healthKey({ offline: ['b', 'a'], fault: [] })).toBe(healthKey({ offline: ['a', 'b'], fault: [] }));
    expect(healthKey({ offline: ['a'], fault: [] })).not.toBe(healthKey({ offline: [], fault: ['a'] }));
    // Sorting for the key leaves the answer as it was.
    const offline = ['b', 'a'];
    healthKey({ offline, fault: [] });
    expect(offline).toEqual(['b', 'a']);
  });
});
