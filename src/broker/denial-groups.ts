/**
 * Groups the audit entries of malformed requests per client address and time window, so a client
 * sending junk costs one fsync'd, hash-chained entry per window instead of one per request (rate
 * limit refusals are grouped per episode the same way). The first denial of a window is written
 * (carrying the count of the address's previous window); the rest of the window is only counted,
 * and what is still counted when the broker closes, or an address is forgotten at the cap, is
 * written as one entry per address.
 */

export interface Group {
  client: string;
  /** ms since the epoch: start of the window. */
  since: number;
  /** Denials in the window that were not written one by one. */
  count: number;
}

export type GroupDecision = { write: true; previous?: Group } | { write: false };

export class DenialGroups {
  private readonly groups = new Map<string, Group>();

  constructor(
    private readonly windowMs: number,
    private readonly maxClients: number,
  ) {}

  /**
   * Notes one denial for `client` at `nowMs`. `write: true`: write an entry for it (with
   * `previous`, the finished window's unwritten count, when there was one). `evicted` receives
   * groups pushed out at the cap, whose counts must be written.
   */
  note(client: string, nowMs: number, evicted: (g: Group) => void): GroupDecision {
    const g = this.groups.get(client);
    if (g !== undefined && nowMs >= g.since && nowMs < g.since + this.windowMs) {
      g.count++;
      return { write: false };
    }
    if (g !== undefined) this.groups.delete(client);
    else if (this.groups.size >= this.maxClients) {
      const oldest = this.groups.values().next();
      if (!oldest.done) {
        this.groups.delete(oldest.value.client);
        if (oldest.value.count > 0) evicted(oldest.value);
      }
    }
    this.groups.set(client, { client, since: nowMs, count: 0 });
    return g !== undefined && g.count > 0 ? { write: true, previous: g } : { write: true };
  }

  /** Every group with an unwritten count; the table is emptied. */
  drain(): Group[] {
    const out = [...this.groups.values()].filter((g) => g.count > 0);
    this.groups.clear();
    return out;
  }
}
