/**
 * Feeds a native run from a source that is not a local file: the sealed bytes of the chunks the run
 * needs are fetched as few contiguous spans (adjacent chunks coalesced), streamed, and handed to the
 * addon one window of whole chunks at a time, which copies them into secure memory and decrypts,
 * authenticates and digests them there. Memory stays bounded: the window being filled here, and
 * the addon's copy of the one being decrypted. Any failure aborts the run, which wipes every
 * secure byte it held, before the error is thrown.
 */
import { TAG_LENGTH } from '../format/constants.js';
import { chunkFileOffset, chunkPlainLength, type Layout } from '../format/layout.js';
import { awaitNative, callNative, type NativeRunResult, type NativeSealedRun } from '../native/addon.js';
import type { OpenedSource } from '../sources/types.js';

export const DEFAULT_WINDOW_BYTES = 16 * 1024 * 1024;

/** One contiguous stretch of sealed bytes: [offset, offset + length), cut into windows ending at `ends`. */
export interface Span {
  offset: number;
  length: number;
  /** File offsets where the windows end; the last is offset + length. Each window holds whole chunks. */
  ends: number[];
}

/**
 * Coalesces the chunks (ascending) into contiguous spans, each cut into windows of whole chunks of
 * at most `windowBytes` (a window holds at least one chunk, whatever its size).
 */
export function planSpans(chunks: ArrayLike<number>, layout: Layout, windowBytes: number): Span[] {
  const spans: Span[] = [];
  let span: Span | undefined;
  let windowStart = 0;
  for (let i = 0; i < chunks.length; i++) {
    const c = chunks[i]!;
    const start = chunkFileOffset(layout, c);
    const end = start + chunkPlainLength(layout, c) + TAG_LENGTH;
    if (!span || span.offset + span.length !== start) {
      if (span) span.ends.push(span.offset + span.length);
      span = { offset: start, length: 0, ends: [] };
      spans.push(span);
      windowStart = start;
    } else if (end - windowStart > windowBytes) {
      span.ends.push(start);
      windowStart = start;
    }
    span.length = end - span.offset;
  }
  if (span) span.ends.push(span.offset + span.length);
  return spans;
}

export interface FeedOptions {
  windowBytes: number;
  signal?: AbortSignal;
}

/**
 * Runs `run` to its end on bytes from `source`: its result, or a typed error with the run aborted
 * (wiped). One window buffer is reused: the addon copies each window as it is fed, so the next one
 * is read into the same buffer while the previous one is decrypted.
 */
export async function feedRun(run: NativeSealedRun, source: OpenedSource, layout: Layout, options: FeedOptions): Promise<NativeRunResult> {
  let pending: Promise<boolean> | undefined;
  try {
    const spans = planSpans(run.chunks, layout, options.windowBytes);
    let largest = 0;
    for (const s of spans) s.ends.forEach((e, i) => (largest = Math.max(largest, e - (i === 0 ? s.offset : s.ends[i - 1]!))));
    const window = new Uint8Array(largest);
    outer: for (const span of spans) {
      const reader = await source.readSpan(span.offset, span.length, options.signal);
      try {
        let at = span.offset;
        for (const end of span.ends) {
          const bytes = window.subarray(0, end - at);
          await reader.readFully(bytes);
          if (pending) {
            const more = await pending;
            pending = undefined;
            if (!more) break outer; // a chunk failed: the run stops, nothing more is fetched
          }
          const from = at;
          pending = awaitNative(callNative(() => run.feed(from, [bytes]))); // copied before feed returns
          pending.catch(() => {}); // awaited below; until then a rejection must not count as unhandled
          at = end;
        }
      } finally {
        reader.close();
      }
    }
    if (pending) {
      await pending;
      pending = undefined;
    }
    return callNative(() => run.finish());
  } catch (err) {
    run.abort();
    if (pending) await pending.catch(() => {}); // the window in flight ends, and its job wipes the run
    throw err;
  }
}
