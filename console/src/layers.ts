// The main map's layers, bottom to top, and how the switcher groups them. The comments say
// why a layer is drawn the way it is: in a browser without a GPU every layer that covers
// the screen costs each frame (tests/fps.mjs measures it).

import type { ExpressionSpecification, LayerSpecification } from 'maplibre-gl';

import { metresWide } from './draw';
import { HEAT_LAYERS } from './heat';
import type { MessageKey } from './i18n';
import { POSITION_LAYERS } from './positions';
import type { LayerName } from './types';

/** Above this many devices the device layer clusters points. */
export const CLUSTER_ABOVE = 3000;

const SEVERITY_COLOURS: Record<string, string> = {
  critical: '#b3261e',
  high: '#e8590c',
  medium: '#d9a400',
  low: '#3b7dd8',
};

export const severityColour: ExpressionSpecification = [
  'match',
  ['get', 'severity'],
  'critical',
  SEVERITY_COLOURS.critical,
  'high',
  SEVERITY_COLOURS.high,
  'low',
  SEVERITY_COLOURS.low,
  SEVERITY_COLOURS.medium,
];

const DEVICE_KIND_COLOUR: ExpressionSpecification = ['match', ['get', 'kind'], 'smoke', '#d35400', 'gas', '#8e44ad', 'water_level', '#2980b9', 'camera', '#2c3e50', '#7f8c8d'];
/** Device health (devicehealth.ts): `ok` unless it has an open maintenance ticket. */
const HEALTHY: ExpressionSpecification = ['==', ['get', 'health'], 'ok'];
const OFFLINE: ExpressionSpecification = ['==', ['get', 'health'], 'offline'];

export const ZONE_COLOURS: ExpressionSpecification = [
  'match',
  ['get', 'kind'],
  'restricted',
  '#c0392b',
  'depot',
  '#8e44ad',
  'school',
  '#2e86de',
  'square',
  '#16a085',
  'underpass',
  '#1f618d',
  'corridor',
  '#d35400',
  '#7f8c8d',
];

export type Group = LayerName | 'alerts' | 'vehicles' | 'responders' | 'heat';
export const GROUP_LAYERS: Record<Group, string[]> = {
  regions: ['regions-fill', 'regions-line', 'regions-community-line'],
  heat: ['heat-fill'],
  grids: ['grids-line', 'grids-hit'],
  roads: ['roads-local', 'roads-line'],
  zones: ['zones-fill', 'zones-corridor', 'zones-line'],
  devices: ['devices-cluster', 'devices-point'],
  vehicles: ['positions-circle', 'positions-heading'],
  responders: ['positions-circle'],
  alerts: ['alerts-pulse', 'alerts-circle', 'alerts-selected'],
};
export const GROUP_LABELS: Record<Group, MessageKey> = {
  regions: 'layer_regions',
  heat: 'layer_heat',
  grids: 'layer_grids',
  roads: 'layer_roads',
  zones: 'layer_zones',
  devices: 'layer_devices',
  vehicles: 'layer_vehicles',
  responders: 'layer_responders',
  alerts: 'layer_alerts',
};

/** Point layers that other views fill: a rule trial's alerts, a search's events. */
export type OverlayName = 'trial' | 'search';
export const OVERLAY_LABELS: Record<OverlayName, MessageKey> = { trial: 'layer_trial', search: 'layer_search' };
export const OVERLAY_COLOURS: Record<OverlayName, string> = { trial: '#6a1b9a', search: '#00838f' };

// Clicks go to the topmost kind of thing under the pointer.
export const CLICK_ORDER = [
  'positions-circle',
  'search-circle',
  'trial-circle',
  'alerts-circle',
  'devices-cluster',
  'devices-point',
  'zones-line',
  'zones-corridor',
  'zones-fill',
  'roads-line',
  'roads-local',
  'grids-hit',
  'heat-fill',
  'regions-fill',
];

/** Areas that cover the map: clickable, but the pointer does not turn into a hand over them. */
export const AREA_LAYERS = new Set(['grids-hit', 'heat-fill', 'regions-fill', 'zones-fill']);

/** The layers, for a city around latitude `lat` (corridor widths are drawn in metres). */
export function cityLayers(lat: number): LayerSpecification[] {
return [
    {
      // Only communities with open alerts are filled (setCommunityCounts keeps the filter):
      // a transparent fill would still cost every pixel it covers on every frame.
      id: 'regions-fill',
      type: 'fill',
      source: 'regions',
      filter: ['in', ['get', 'id'], ['literal', []]],
      paint: {
        // Communities coloured by their open alerts (feature-state set from the alert list).
        'fill-color': [
          'step',
          ['coalesce', ['feature-state', 'open'], 0],
          'rgba(255,255,255,0)',
          1,
          '#fde7b0',
          3,
          '#f8b35b',
          8,
          '#e4572e',
          20,
          '#a4161a',
        ],
        'fill-opacity': 0.55,
        // The outlines are their own layers: the fill's antialiased edge pass would draw them twice.
        'fill-antialias': false,
      },
    },
    ...HEAT_LAYERS,
    {
      id: 'regions-line',
      type: 'line',
      source: 'region-lines',
      filter: ['>=', ['get', 'rank'], 2],
      paint: {
        'line-color': ['match', ['get', 'level'], 'district', '#34495e', '#5d6d7e'],
        'line-width': ['match', ['get', 'level'], 'district', 2.5, 1.5],
      },
    },
    {
      // Community outlines from zoom 12: a large city has hundreds; their fill says enough below.
      id: 'regions-community-line',
      type: 'line',
      source: 'region-lines',
      minzoom: 12,
      filter: ['<', ['get', 'rank'], 2],
      paint: { 'line-color': '#95a5a6', 'line-width': 0.8 },
    },
    {
      // Patrol grids from zoom 14, where a 300 m cell is some 40 pixels wide: further out a
      // large city's thousands of cells are a grey mesh that costs more than any other layer.
      id: 'grids-line',
      type: 'line',
      source: 'grid-lines',
      minzoom: 14,
      paint: { 'line-color': '#b0bec5', 'line-width': 0.5, 'line-dasharray': [2, 2] },
    },
    {
      // Grids for clicks: a transparent fill is never drawn, but it can be queried.
      id: 'grids-hit',
      type: 'fill',
      source: 'grids',
      minzoom: 14,
      paint: { 'fill-color': '#000000', 'fill-opacity': 0 },
    },
    {
      // Local streets from zoom 13: further out they are a mesh as dense as the grids.
      id: 'roads-local',
      type: 'line',
      source: 'roads',
      minzoom: 13,
      filter: ['==', ['get', 'class'], 'local'],
      layout: { 'line-cap': 'round', 'line-join': 'round' },
      paint: { 'line-color': '#ffffff', 'line-width': ['interpolate', ['linear'], ['zoom'], 13, 1, 16, 3] },
    },
    {
      id: 'roads-line',
      type: 'line',
      source: 'roads',
      filter: ['!=', ['get', 'class'], 'local'],
      layout: { 'line-cap': 'round', 'line-join': 'round' },
      paint: {
        'line-color': ['match', ['get', 'class'], ['motorway', 'trunk', 'expressway'], '#e67e22', ['primary', 'arterial'], '#f1c40f', '#ffffff'],
        'line-width': ['interpolate', ['linear'], ['zoom'], 10, 1, 15, 4],
      },
    },
    {
      id: 'zones-fill',
      type: 'fill',
      source: 'zones',
      filter: ['==', ['geometry-type'], 'Polygon'],
      paint: { 'fill-color': ZONE_COLOURS, 'fill-opacity': 0.2, 'fill-antialias': false },
    },
    {
      // A corridor drawn as wide as it is on the ground.
      id: 'zones-corridor',
      type: 'line',
      source: 'zones',
      filter: ['all', ['==', ['geometry-type'], 'LineString'], ['has', 'width_m']],
      layout: { 'line-cap': 'round', 'line-join': 'round' },
      paint: { 'line-color': ZONE_COLOURS, 'line-opacity': 0.18, 'line-width': metresWide(['to-number', ['get', 'width_m'], 0], lat) },
    },
    {
      id: 'zones-line',
      type: 'line',
      source: 'zones',
      paint: {
        'line-color': ZONE_COLOURS,
        'line-width': ['match', ['geometry-type'], 'LineString', 3, 1.5],
        'line-opacity': 0.8,
      },
    },
    {
      id: 'devices-cluster',
      type: 'circle',
      source: 'devices',
      filter: ['has', 'point_count'],
      paint: {
        'circle-color': '#607d8b',
        'circle-opacity': 0.6,
        'circle-radius': ['step', ['get', 'point_count'], 8, 20, 12, 100, 16, 500, 22],
        // A cluster holding devices that need care gets a thick ring (shape, not only colour).
        'circle-stroke-color': ['case', ['>', ['get', 'needs_care'], 0], '#c0392b', '#ffffff'],
        'circle-stroke-width': ['case', ['>', ['get', 'needs_care'], 0], 3, 1],
      },
    },
    {
      id: 'devices-point',
      type: 'circle',
      source: 'devices',
      filter: ['!', ['has', 'point_count']],
      // Health by shape as well as colour: an offline device is a hollow ring, a faulty one
      // has a thick amber ring; both are drawn larger than healthy ones.
      paint: {
        'circle-color': ['case', OFFLINE, '#ffffff', DEVICE_KIND_COLOUR],
        'circle-radius': ['interpolate', ['linear'], ['zoom'], 11, ['case', HEALTHY, 1.5, 3], 16, ['case', HEALTHY, 5, 7]],
        'circle-stroke-color': ['case', OFFLINE, '#c0392b', HEALTHY, '#ffffff', '#e69500'],
        'circle-stroke-width': ['case', HEALTHY, 0.5, 2.5],
      },
    },
    ...POSITION_LAYERS,
    {
      id: 'alerts-pulse',
      type: 'circle',
      source: 'alerts',
      filter: ['==', ['get', 'unacked'], true],
      paint: { 'circle-color': severityColour, 'circle-radius': 10, 'circle-opacity': 0.5, 'circle-stroke-width': 0 },
    },
    {
      id: 'alerts-circle',
      type: 'circle',
      source: 'alerts',
      paint: {
        'circle-color': severityColour,
        'circle-radius': ['match', ['get', 'severity'], 'critical', 8, 'high', 7, 6],
        'circle-stroke-color': ['case', ['get', 'open'], '#ffffff', '#555555'],
        'circle-stroke-width': 2,
        'circle-opacity': ['case', ['get', 'open'], 1, 0.45],
      },
    },
    {
      id: 'alerts-selected',
      type: 'circle',
      source: 'alerts',
      filter: ['==', ['get', 'id'], ''],
      paint: { 'circle-color': 'rgba(0,0,0,0)', 'circle-radius': 13, 'circle-stroke-color': '#111111', 'circle-stroke-width': 3 },
    },
    {
      // A rule trial's would-be alerts: severity inside, a purple ring around.
      id: 'trial-circle',
      type: 'circle',
      source: 'trial-points',
      paint: {
        'circle-color': severityColour,
        'circle-radius': 6,
        'circle-stroke-color': OVERLAY_COLOURS.trial,
        'circle-stroke-width': 3,
      },
    },
    {
      id: 'search-circle',
      type: 'circle',
      source: 'search-points',
      paint: {
        'circle-color': OVERLAY_COLOURS.search,
        'circle-radius': ['case', ['boolean', ['get', 'picked'], false], 9, 5],
        'circle-stroke-color': ['case', ['boolean', ['get', 'picked'], false], '#111111', '#ffffff'],
        'circle-stroke-width': ['case', ['boolean', ['get', 'picked'], false], 3, 1.5],
      },
    },
  ];
}
