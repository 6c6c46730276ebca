import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { api } from '../../src/api';
import { fixedLayer, forgetLayers, RegionIndex, regionIndex } from '../../src/cityindex';
import type { Feature, FeatureCollection } from '../../src/types';

const collection = (features: Feature[]): FeatureCollection => ({ type: 'FeatureCollection', features });
const region = (id: string, name: string, parent?: string, level = 'district'): Feature => ({
  type: 'Feature',
  id,
  geometry: { type: 'Polygon', coordinates: [] },
  properties: { id, name, level, ...(parent ? { parent } : {}) },
});
const grid = (id: string, regionId?: string): Feature => ({
  type: 'Feature',
  id,
  geometry: { type: 'Polygon', coordinates: [] },
  properties: regionId ? { id, region: regionId } : { id },
});

const REGIONS = collection([
  region('north-zeta', 'Zeta Street', 'north', 'street'),
  region('north', 'North', 'city'),
  region('lost', 'Lost', 'ghost'),
  region('city', 'Cityward', undefined, 'city'),
  region('east', 'East', 'city'),
  region('north-alpha', 'Alpha Street', 'north', 'street'),
]);
const GRIDS = collection([grid('g1', 'north-alpha'), grid('g2', 'east'), grid('g3')]);

describe('RegionIndex', () => {
  it('lists regions in tree order, each followed by its children by name, with their depth', () => {
    const index = new RegionIndex(REGIONS, GRIDS);
    expect(index.regions.map((r) => [r.id, r.depth])).toEqual([
      ['city', 0],
      ['east', 1],
      ['north', 1],
      ['north-alpha', 2],
      ['north-zeta', 2],
      // Its parent is not in the layer: listed at the top rather than lost.
      ['lost', 0],
    ]);
    expect(index.regions.find((r) => r.id === 'lost')?.parent).toBe('ghost');
  });

  it('puts a grid in its region and every region above it', () => {
    const index = new RegionIndex(REGIONS, GRIDS);
    expect(index.gridIn('g1', 'north-alpha')).toBe(true);
    expect(index.gridIn('g1', 'north')).toBe(true);
    expect(index.gridIn('g1', 'city')).toBe(true);
    expect(index.gridIn('g1', 'east')).toBe(false);
    expect(index.gridIn('g1', 'north-zeta')).toBe(false);
    expect(index.gridIn('g2', 'city')).toBe(true);
  });

  it('puts no region on a grid without one, an unknown grid or no grid', () => {
    const index = new RegionIndex(REGIONS, GRIDS);
    expect(index.gridIn('g3', 'city')).toBe(false);
    expect(index.gridIn('g9', 'city')).toBe(false);
    expect(index.gridIn(undefined, 'city')).toBe(false);
    expect(index.gridIn(null, 'city')).toBe(false);
  });

  it('names a region by its name, or its id when unknown', () => {
    const index = new RegionIndex(collection([{ ...region('x', ''), properties: { id: 'x' } }, region('y', 'Why')]), GRIDS);
    expect(index.name('y')).toBe('Why');
    expect(index.name('x')).toBe('x');
    expect(index.name('nowhere')).toBe('nowhere');
  });

  it('ends on a loop of parents instead of running forever', () => {
    const index = new RegionIndex(collection([region('a', 'A', 'b'), region('b', 'B', 'a')]), collection([grid('g', 'a')]));
    expect(index.gridIn('g', 'a')).toBe(true);
    expect(index.gridIn('g', 'c')).toBe(false);
  });
});

describe('fixed layers', () => {
  beforeEach(() => forgetLayers());
  afterEach(() => vi.restoreAllMocks());

  it('fetches each layer once and shares the answer', async () => {
    const layer = vi.spyOn(api, 'layer').mockImplementation(async (name) => collection([grid(name)]));
    const [a, b] = await Promise.all([fixedLayer('grids'), fixedLayer('grids')]);
    expect(a).toBe(b);
    await fixedLayer('roads');
    expect(layer.mock.calls.map(([n]) => n)).toEqual(['grids', 'roads']);
  });

  it('fetches again after a failure, and after sign-out', async () => {
    const layer = vi
      .spyOn(api, 'layer')
      .mockRejectedValueOnce(new Error('offline'))
      .mockImplementation(async () => collection([]));
    await expect(fixedLayer('regions')).rejects.toThrow('offline');
    await expect(fixedLayer('regions')).resolves.toEqual(collection([]));
    await fixedLayer('regions');
    expect(layer).toHaveBeenCalledTimes(2);
    forgetLayers();
    await fixedLayer('regions');
    expect(layer).toHaveBeenCalledTimes(3);
  });

  it('builds the region index from the regions and grids layers, once', async () => {
    const layer = vi.spyOn(api, 'layer').mockImplementation(async (name) => (name === 'regions' ? REGIONS : GRIDS));
    const index = await regionIndex();
    expect(index.gridIn('g1', 'north')).toBe(true);
    expect(await regionIndex()).toBe(index);
    expect(layer).toHaveBeenCalledTimes(2);
  });
});
