// A replicated rate limiter in JavaScript: token buckets, one per key, under rules chosen by key
// prefix. Built into a raftwasm:fsm@0.2.0 component by componentize-js (scripts/polyglot.sh).
//
// Time is `Date.now()`: under raftwasm that is the log entry's time, stamped by the leader, so
// every node refills every bucket by the same amount. Tokens are counted in thousandths, in
// integers, so no rounding can differ between nodes.
//
// Commands (JSON):
//   {"op":"rule","prefix":P,"capacity":N,"per_second":R}  keys starting with P (the longest
//       matching prefix wins) hold at most N tokens and gain R per second; "" is the default
//   {"op":"take","key":K,"cost":N?}  -> {"allowed":true,"left":T} or
//       {"allowed":false,"left":T,"retry_ms":M}
//   {"op":"forget","key":K}  drops the key's bucket (it starts full again)
// Queries: {"op":"peek","key":K} -> {"left":T} at the read's time; {"op":"rules"}.

import { emit } from "raftwasm:fsm/context@0.2.0";

const MILLI = 1000;
let rules = { "": { capacity: 10, per_second: 1 } };
let buckets = {}; // key -> { milli, at_ms }

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const out = (value) => encoder.encode(JSON.stringify(value));
const refuse = (tag, message) => {
  throw { tag, val: message };
};

function parse(bytes, what) {
  let value;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch (e) {
    refuse("invalid-input", `${what} is not JSON: ${e.message}`);
  }
  if (typeof value !== "object" || value === null) refuse("invalid-input", `${what} must be an object`);
  return value;
}

const count = (v, name) => {
  if (!Number.isSafeInteger(v) || v < 0) refuse("invalid-input", `"${name}" must be a whole number >= 0`);
  return v;
};

function ruleFor(key) {
  let best = "";
  for (const prefix of Object.keys(rules)) {
    if (key.startsWith(prefix) && prefix.length > best.length) best = prefix;
  }
  return rules[best];
}

// The key's bucket refilled up to now (not stored).
function level(key, now) {
  const rule = ruleFor(key);
  const full = rule.capacity * MILLI;
  const b = buckets[key];
  if (!b) return full;
  const gained = Math.max(0, now - b.at_ms) * rule.per_second;
  return Math.min(full, b.milli + gained);
}

const commands = {
  rule(c) {
    if (typeof c.prefix !== "string") refuse("invalid-input", '"prefix" must be a string');
    rules[c.prefix] = { capacity: count(c.capacity, "capacity"), per_second: count(c.per_second, "per_second") };
    return { rules: Object.keys(rules).length };
  },
  take(c) {
    if (typeof c.key !== "string" || c.key === "") refuse("invalid-input", '"key" must be a non-empty string');
    const cost = count(c.cost ?? 1, "cost") * MILLI;
    const now = Date.now();
    const milli = level(c.key, now);
    const rule = ruleFor(c.key);
    if (cost > rule.capacity * MILLI) refuse("rejected", `a cost over the capacity (${rule.capacity}) is never allowed`);
    if (milli < cost) {
      const retry = rule.per_second > 0 ? Math.ceil((cost - milli) / rule.per_second) : null;
      return { allowed: false, left: Math.floor(milli / MILLI), retry_ms: retry };
    }
    buckets[c.key] = { milli: milli - cost, at_ms: now };
    emit(c.key, out({ left: Math.floor((milli - cost) / MILLI), at_ms: now }));
    return { allowed: true, left: Math.floor((milli - cost) / MILLI) };
  },
  forget(c) {
    const had = c.key in buckets;
    delete buckets[c.key];
    return { forgot: had };
  },
};

function sorted(object) {
  return Object.fromEntries(Object.keys(object).sort().map((k) => [k, object[k]]));
}

export const stateMachine = {
  apply(command) {
    const c = parse(command, "a command");
    const run = Object.hasOwn(commands, c.op) ? commands[c.op] : null;
    if (!run) refuse("invalid-input", `unknown command ${JSON.stringify(c.op)}`);
    return out(run(c));
  },
  query(request) {
    const q = parse(request, "a query");
    if (q.op === "peek") return out({ left: Math.floor(level(String(q.key), Date.now()) / MILLI) });
    if (q.op === "rules") return out(sorted(rules));
    refuse("invalid-input", `unknown query ${JSON.stringify(q.op)}`);
  },
  snapshot() {
    return out({ rules: sorted(rules), buckets: sorted(buckets) });
  },
  restore(state) {
    const s = state.length ? parse(state, "a snapshot") : { rules: { "": { capacity: 10, per_second: 1 } }, buckets: {} };
    rules = s.rules;
    buckets = s.buckets;
  },
};
