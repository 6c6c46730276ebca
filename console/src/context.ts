// What every view needs to know about the session: who is signed in and the city's units.

import type { CityInfo, Me, Unit } from './types';

export interface Session {
  me: Me;
  city: CityInfo;
  units: Map<string, Unit>;
}

export function makeSession(me: Me, city: CityInfo): Session {
  return { me, city, units: new Map(city.units.map((u) => [u.id, u])) };
}

/** A unit's name, with its id so that duty officers can tell same-named units apart. */
export function unitLabel(session: Session, id: string | null | undefined): string {
  if (!id) return '';
  const unit = session.units.get(id);
  return unit ? `${unit.name} (${id})` : id;
}

export function unitName(session: Session, id: string | null | undefined): string {
  if (!id) return '';
  return session.units.get(id)?.name ?? id;
}
