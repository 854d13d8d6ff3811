/**
 * The pending-challenge table: its cap is shared fairly between client addresses (IPv6 counted by
 * /64, which one host usually holds whole), so a few addresses cannot make /auth refuse everyone.
 */
import { describe, expect, it } from 'vitest';
import { ChallengeTable, clientBucket } from '../../src/broker/challenges.js';

describe('challenge table: per-address share of the cap', () => {
  it('a full table gives up the oldest challenge of the address that holds the most, not a newcomer', () => {
    const t = new ChallengeTable(60_000, 4);
    const heavy = [0, 1, 2].map(() => t.issue('simulated', 0, '10.0.0.1')!);
    const light = t.issue('simulated', 0, '10.0.0.2')!;
    const other = t.issue('simulated', 0, '10.0.0.3');
    expect(other).toBeDefined();
    expect(t.size).toBe(4);
    expect(t.take(heavy[0]!.sessionId, 1).ok).toBe(false);
    expect(t.take(heavy[1]!.sessionId, 1).ok).toBe(true);
    expect(t.take(light.sessionId, 1).ok).toBe(true);
  });

  it('the address that holds the most is refused rather than evicting its own challenges', () => {
    const t = new ChallengeTable(60_000, 2);
    t.issue('simulated', 0, '10.0.0.1');
    t.issue('simulated', 0, '10.0.0.1');
    expect(t.issue('simulated', 0, '10.0.0.1')).toBeUndefined();
    expect(t.issue('simulated', 0, '10.0.0.2')).toBeDefined();
  });

  it('IPv6 addresses are counted by /64, IPv4-mapped IPv6 as IPv4', () => {
    expect(clientBucket('2001:db8:1:2::1')).toBe(clientBucket('2001:0db8:0001:0002:ffff:eeee:dddd:cccc'));
    expect(clientBucket('2001:db8:1:2::1')).not.toBe(clientBucket('2001:db8:1:3::1'));
    expect(clientBucket('::ffff:127.0.0.1')).toBe(clientBucket('127.0.0.1'));
    expect(clientBucket('fe80::1%eth0')).toBe(clientBucket('fe80::2'));
    expect(clientBucket('10.0.0.1')).not.toBe(clientBucket('10.0.0.2'));
    const t = new ChallengeTable(60_000, 2);
    t.issue('simulated', 0, '2001:db8::1');
    t.issue('simulated', 0, '2001:db8::2');
    // Both count for the same /64: a third from it is refused, not a new slot.
    expect(t.issue('simulated', 0, '2001:db8::3')).toBeUndefined();
  });

  it('expired and taken challenges stop counting for their address', () => {
    const t = new ChallengeTable(1000, 2);
    const a = t.issue('simulated', 0, '10.0.0.1')!;
    t.issue('simulated', 0, '10.0.0.1');
    expect(t.take(a.sessionId, 1).ok).toBe(true);
    expect(t.issue('simulated', 1, '10.0.0.1')).toBeDefined();
    expect(t.issue('simulated', 2000, '10.0.0.1')).toBeDefined();
    expect(t.size).toBe(1);
  });
});
