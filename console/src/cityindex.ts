// The city's fixed layers, fetched once per session and shared by the views that need
// them (the main map, the evidence map, the queue's region filter), and the region tree
// that says which regions a grid lies in.

import { api } from './api';
import type { FeatureCollection, LayerName } from './types';

/** Layers that do not change while the console runs (zones do: they are edited). */
type FixedLayer = Extract<LayerName, 'regions' | 'grids' | 'roads'>;

const cache = new Map<FixedLayer, Promise<FeatureCollection>>();

/** One fixed layer, fetched at most once (a failed fetch is tried again next time). */
export function fixedLayer(name: FixedLayer): Promise<FeatureCollection> {
  let pending = cache.get(name);
  if (!pending) {
    pending = api.layer(name);
    pending.catch(() => cache.delete(name));
    cache.set(name, pending);
  }
  return pending;
}


export interface RegionEntry {
  id: string;
  name: string;
  level: string;
  parent: string | null;
  depth: number;
}

/** Regions in tree order (each followed by its children) and the region of every grid. */
export class RegionIndex {
  readonly regions: RegionEntry[] = [];
  private readonly byId = new Map<string, RegionEntry>();
  private readonly gridRegion = new Map<string, string>();

  constructor(regions: FeatureCollection, grids: FeatureCollection) {
    const raw = regions.features.map((f) => ({
      id: String(f.properties.id ?? f.id),
      name: String(f.properties.name ?? f.properties.id ?? f.id),
      level: String(f.properties.level ?? ''),
      parent: f.properties.parent ? String(f.properties.parent) : null,
    }));
    const known = new Set(raw.map((r) => r.id));
    const children = new Map<string | null, typeof raw>();
    for (const r of raw) {
      const parent = r.parent && known.has(r.parent) ? r.parent : null;
      const list = children.get(parent) ?? [];
      list.push(r);
      children.set(parent, list);
    }
    const walk = (parent: string | null, depth: number) => {
      const list = (children.get(parent) ?? []).sort((a, b) => a.name.localeCompare(b.name));
      for (const r of list) {
        const entry = { ...r, depth };
        this.regions.push(entry);
        this.byId.set(r.id, entry);
        walk(r.id, depth + 1);
      }
    };
    walk(null, 0);
    for (const g of grids.features) {
      if (g.properties.region) this.gridRegion.set(String(g.properties.id ?? g.id), String(g.properties.region));
    }
  }

  name(id: string): string {
    return this.byId.get(id)?.name ?? id;
  }

  /** Whether the grid lies in `region` or in one of its sub-regions. */
  gridIn(grid: string | undefined | null, region: string): boolean {
    if (!grid) return false;
    let cursor: string | null | undefined = this.gridRegion.get(grid);
    const seen = new Set<string>();
    while (cursor && !seen.has(cursor)) {
      if (cursor === region) return true;
      seen.add(cursor);
      cursor = this.byId.get(cursor)?.parent;
    }
    return false;
  }
}

let index: Promise<RegionIndex> | null = null;

export function regionIndex(): Promise<RegionIndex> {
  if (!index) {
    index = Promise.all([fixedLayer('regions'), fixedLayer('grids')]).then(([r, g]) => new RegionIndex(r, g));
    index.catch(() => {
      index = null;
    });
  }
  return index;
}

/** Forgets what was fetched (on sign-out). */
export function forgetLayers(): void {
  cache.clear();
  index = null;
}
