//! Linearizability of one address's sub-history as a register: the Wing & Gong search with
//! Lowe's memoization of (linearized set, state), as in Knossos and Porcupine.
//!
//! Calls and returns of the operations with a known outcome form one list sorted by time (a
//! call before a return at the same instant, so that ties count as concurrent). The search walks
//! the list: at a call it tries to linearize that operation now; at the return of an operation
//! not yet linearized it backtracks.
//!
//! An unknown outcome may take effect at any time after its call, or never. Such operations are
//! fired lazily: only just before a known operation that the current holder would refuse, and
//! only to make it acceptable (a release, an allocation, or a release then an allocation). That
//! loses nothing: an unknown operation can always be postponed to just before the first
//! operation that observes its effect, and where that operation already accepts the current
//! holder, firing first never yields a state that not firing (or firing later) cannot. Of
//! several identical unknown operations only the earliest invoked is tried (it can stand in for
//! any later one). `the_search_agrees_with_brute_force_on_small_histories` checks all of this
//! against the definition.

use std::collections::{HashMap, HashSet};

use crate::projection::{OwnerId, Touch};
use crate::register::{Effect, Holder};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Linearizable,
    /// No order explains the results. `blocked` is the operation that could not be placed
    /// after the longest consistent prefix found; `prefix_tail` the last operations of that
    /// prefix; `holder` the register's value after it.
    NotLinearizable {
        blocked: u64,
        prefix_tail: Vec<u64>,
        holder: Holder,
    },
    /// `op` needs `owner` as the holder, and nothing ever allocates this address to `owner`.
    NeverAllocated {
        op: u64,
        owner: OwnerId,
    },
    /// The step budget ran out first.
    Inconclusive,
}

const NIL: usize = usize::MAX;

/// Event `2i` is the call of touch `i`, `2i + 1` its return.
fn is_call(e: usize) -> bool {
    e.is_multiple_of(2)
}

struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl List {
    /// Unlinks `e`; `relink` undoes it as long as unlinks are undone in reverse order.
    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }
}

/// One linearized known operation, with the unknown ones fired just before it.
struct Frame {
    /// The call event.
    entry: usize,
    holder_before: Holder,
    /// The ways to place it that were computed on arrival, and which one is in use.
    options: Vec<Vec<usize>>,
    chosen: usize,
}

struct Search<'a> {
    touches: &'a [Touch],
    /// Time of each event: 2i is the call of touch i, 2i+1 its return.
    times: Vec<u64>,
    list: List,
    head: usize,
    /// Unknown touches grouped by identical effect, each group in order of invoke. Only the
    /// earliest unused member of a group is ever fired, so the used ones are always a prefix.
    groups: Vec<Vec<usize>>,
    group_of: Vec<usize>,
    group_used: Vec<usize>,
    /// Groups of unknown releases, and of unknown allocations by owner.
    releases: Vec<usize>,
    allocations: HashMap<OwnerId, Vec<usize>>,
    bits: Vec<u64>,
    holder: Holder,
    remaining: usize,
    cache: HashSet<(Vec<u64>, Holder)>,
    stack: Vec<Frame>,
}

impl Search<'_> {
    fn mark(&mut self, i: usize, on: bool) {
        if !self.touches[i].required {
            let g = self.group_of[i];
            self.group_used[g] = if on { self.group_used[g] + 1 } else { self.group_used[g] - 1 };
        }
        if on {
            self.bits[i / 64] |= 1 << (i % 64);
        } else {
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }

    /// The ways to linearize the known touch at `entry` now: directly, or after one or two
    /// unknown touches that make the holder acceptable to it. From a held address only a release
    /// can help (then, for an operation that needs a holder, that owner's allocation); from a
    /// free one only an allocation by the owner the operation needs.
    fn options(&self, entry: usize) -> Vec<Vec<usize>> {
        let effect = &self.touches[entry / 2].effect;
        if effect.step(self.holder).is_some() {
            return vec![vec![]];
        }
        let horizon = self.horizon(entry);
        let first = |g: usize| {
            self.groups[g].get(self.group_used[g]).copied().filter(|&u| self.touches[u].invoke_ns <= horizon)
        };
        let allocations = |o: OwnerId| -> Vec<usize> {
            self.allocations.get(&o).into_iter().flatten().filter_map(|&g| first(g)).collect()
        };
        let needs = effect.needs();
        let Some(held) = self.holder else {
            return needs
                .filter(|o| effect.step(Some(*o)).is_some())
                .map(allocations)
                .unwrap_or_default()
                .into_iter()
                .map(|u| vec![u])
                .collect();
        };
        // Releases of the holder that are firable now. Where one frees a strict subset of what
        // another frees, only it is tried: the other can stand in for it anywhere later.
        let releases: Vec<usize> = self
            .releases
            .iter()
            .filter_map(|&g| first(g))
            .filter(|&u| self.touches[u].effect.step_unknown(Some(held)).is_none())
            .collect();
        let weakest: Vec<usize> = releases
            .iter()
            .copied()
            .filter(|&u| {
                let eu = &self.touches[u].effect;
                !releases.iter().any(|&v| frees_more(eu, &self.touches[v].effect))
            })
            .collect();
        if effect.step(None).is_some() {
            return weakest.into_iter().map(|u| vec![u]).collect();
        }
        let Some(o) = needs else { return Vec::new() };
        let then = allocations(o);
        weakest.iter().flat_map(|&u| then.iter().map(move |&v| vec![u, v])).collect()
    }

    /// The time of the first pending return after `entry`.
    fn horizon(&self, entry: usize) -> u64 {
        let mut e = entry;
        while e != NIL && is_call(e) {
            e = self.list.next[e];
        }
        if e == NIL { u64::MAX } else { self.times[e] }
    }

    /// Tries options `from..` of the known touch at `entry`; on success pushes a frame.
    fn place(&mut self, entry: usize, options: Vec<Vec<usize>>, from: usize) -> bool {
        let i = entry / 2;
        for k in from..options.len() {
            let mut h = self.holder;
            for &u in &options[k] {
                h = self.touches[u].effect.step_unknown(h);
            }
            let Some(after) = self.touches[i].effect.step(h) else { continue };
            for &u in &options[k] {
                self.mark(u, true);
            }
            self.mark(i, true);
            if self.cache.insert((self.bits.clone(), after)) {
                self.stack.push(Frame { entry, holder_before: self.holder, options, chosen: k });
                self.holder = after;
                self.list.unlink(entry);
                self.list.unlink(entry + 1);
                self.remaining -= 1;
                return true;
            }
            self.mark(i, false);
            for &u in &options[k] {
                self.mark(u, false);
            }
        }
        false
    }

    /// Undoes the last frame and returns it.
    fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        let i = frame.entry / 2;
        self.mark(i, false);
        for u in frame.options[frame.chosen].clone() {
            self.mark(u, false);
        }
        self.holder = frame.holder_before;
        self.list.relink(frame.entry + 1);
        self.list.relink(frame.entry);
        self.remaining += 1;
        Some(frame)
    }
}

/// Whether unknown release `a` frees a strict superset of the holders unknown release `b` frees.
fn frees_more(a: &Effect, b: &Effect) -> bool {
    match (a, b) {
        (Effect::ReleaseAddress { .. }, Effect::ReleaseAddress { .. }) => false,
        (Effect::ReleaseAddress { .. }, _) => true,
        (Effect::ReleaseNode { releases, .. }, Effect::ReleaseOwner { owner, .. }) => {
            releases.contains(owner) && releases.len() > 1
        }
        (Effect::ReleaseNode { releases: x, .. }, Effect::ReleaseNode { releases: y, .. }) => {
            x.len() > y.len() && y.iter().all(|o| x.contains(o))
        }
        _ => false,
    }
}

/// Searches for a linearization of `touches` from the register value `initial`, taking its steps
/// from `budget`.
pub(crate) fn search(touches: &[Touch], initial: Holder, budget: &mut u64) -> Verdict {
    let n = touches.len();
    let written: HashSet<OwnerId> = touches
        .iter()
        .filter_map(|t| if let Effect::Allocate { owner } = t.effect { Some(owner) } else { None })
        .chain(initial)
        .collect();
    let never = touches.iter().filter(|t| t.required).find_map(|t| {
        let owner = t.effect.needs().filter(|o| !written.contains(o))?;
        Some(Verdict::NeverAllocated { op: t.op, owner })
    });
    if let Some(v) = never {
        return v;
    }

    let times: Vec<u64> =
        (0..2 * n).map(|e| if is_call(e) { touches[e / 2].invoke_ns } else { touches[e / 2].complete_ns }).collect();
    let mut order: Vec<usize> = (0..2 * n).filter(|e| touches[e / 2].required).collect();
    order.sort_by_key(|&e| (times[e], e % 2, e / 2));
    let head = 2 * n;
    let mut list = List { next: vec![NIL; 2 * n + 1], prev: vec![NIL; 2 * n + 1] };
    let mut last = head;
    for &e in &order {
        list.next[last] = e;
        list.prev[e] = last;
        last = e;
    }
    let mut unknown: Vec<usize> = (0..n).filter(|&i| !touches[i].required).collect();
    unknown.sort_by_key(|&i| (touches[i].invoke_ns, i));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of = vec![0; n];
    let mut by_effect: HashMap<&Effect, usize> = HashMap::new();
    for &u in &unknown {
        let g = *by_effect.entry(&touches[u].effect).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(u);
        group_of[u] = g;
    }
    let mut releases = Vec::new();
    let mut allocations: HashMap<OwnerId, Vec<usize>> = HashMap::new();
    for (g, members) in groups.iter().enumerate() {
        match members.first().map(|&u| &touches[u].effect) {
            Some(Effect::Allocate { owner }) => allocations.entry(*owner).or_default().push(g),
            Some(Effect::Read { .. }) | None => {}
            Some(_) => releases.push(g),
        }
    }

    let mut s = Search {
        touches,
        times,
        list,
        head,
        group_used: vec![0; groups.len()],
        releases,
        allocations,
        groups,
        group_of,
        bits: vec![0; n.div_ceil(64)],
        holder: initial,
        remaining: order.len() / 2,
        cache: HashSet::new(),
        stack: Vec::new(),
    };
    let mut best: Option<(usize, Verdict)> = None;
    let mut entry = s.list.next[s.head];
    loop {
        if s.remaining == 0 {
            return Verdict::Linearizable;
        }
        if *budget == 0 {
            return Verdict::Inconclusive;
        }
        *budget -= 1;
        if entry != NIL && is_call(entry) {
            let options = s.options(entry);
            entry = if s.place(entry, options, 0) { s.list.next[s.head] } else { s.list.next[entry] };
            continue;
        }
        // The return of an operation not linearized yet: backtrack to the next untried way.
        if entry != NIL && best.as_ref().is_none_or(|(depth, _)| s.stack.len() >= *depth) {
            let prefix_tail = s.stack.iter().rev().take(3).rev().map(|f| touches[f.entry / 2].op).collect();
            let v = Verdict::NotLinearizable { blocked: touches[entry / 2].op, prefix_tail, holder: s.holder };
            best = Some((s.stack.len(), v));
        }
        let Some(frame) = s.pop() else {
            return best.map_or(Verdict::Linearizable, |(_, v)| v);
        };
        let at = frame.entry;
        entry = if s.place(at, frame.options, frame.chosen + 1) { s.list.next[s.head] } else { s.list.next[at] };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::Effect;

    fn t(op: u64, invoke_ns: u64, complete_ns: Option<u64>, effect: Effect) -> Touch {
        Touch { op, invoke_ns, complete_ns: complete_ns.unwrap_or(u64::MAX), required: complete_ns.is_some(), effect }
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read returns before the allocate, but they overlap: read-free then allocate.
        let h = [
            t(1, 0, Some(10), Effect::Allocate { owner: 1 }),
            t(2, 1, Some(5), Effect::Read { holder: None }),
            t(3, 11, Some(12), Effect::Read { holder: Some(1) }),
        ];
        assert_eq!(search(&h, None, &mut 1000), Verdict::Linearizable);
    }

    #[test]
    fn a_read_after_a_completed_release_cannot_see_the_old_holder() {
        let h = [
            t(1, 0, Some(1), Effect::Allocate { owner: 1 }),
            t(2, 2, Some(3), Effect::ReleaseOwner { owner: 1, listed: Some(true) }),
            t(3, 4, Some(5), Effect::Read { holder: Some(1) }),
        ];
        assert!(matches!(search(&h, None, &mut 1000), Verdict::NotLinearizable { blocked: 3, .. }));
    }

    #[test]
    fn an_unknown_allocation_may_land_late_or_never() {
        let late = [
            t(1, 0, None, Effect::Allocate { owner: 1 }),
            t(2, 5, Some(6), Effect::Read { holder: None }),
            t(3, 7, Some(8), Effect::Read { holder: Some(1) }),
        ];
        assert_eq!(search(&late, None, &mut 1000), Verdict::Linearizable);
        let never = [t(1, 0, None, Effect::Allocate { owner: 1 }), t(2, 5, Some(6), Effect::Read { holder: None })];
        assert_eq!(search(&never, None, &mut 1000), Verdict::Linearizable);
    }

    #[test]
    fn the_step_bound_makes_the_search_inconclusive() {
        // Concurrent reads of a value written by one of many concurrent unknown allocations.
        let mut h: Vec<Touch> = (0..20).map(|i| t(i, 0, None, Effect::Allocate { owner: i as u32 })).collect();
        h.extend((0..20).map(|i| t(100 + i, 1, Some(2), Effect::Read { holder: Some(i as u32) })));
        assert!(matches!(search(&h, None, &mut 50), Verdict::Inconclusive));
    }

    #[test]
    fn a_holder_nothing_allocated_is_found_without_searching() {
        let h = [t(1, 0, None, Effect::Allocate { owner: 1 }), t(2, 5, Some(6), Effect::Read { holder: Some(2) })];
        assert_eq!(search(&h, None, &mut 1), Verdict::NeverAllocated { op: 2, owner: 2 });
    }

    #[test]
    fn of_identical_unknown_allocations_one_is_enough() {
        // Many retries by owner 1 that timed out; reads alternate 1 / free / 1 with releases between.
        let mut h: Vec<Touch> = (0..30).map(|i| t(i, 0, None, Effect::Allocate { owner: 1 })).collect();
        h.push(t(100, 10, Some(11), Effect::Read { holder: Some(1) }));
        h.push(t(101, 12, Some(13), Effect::ReleaseOwner { owner: 1, listed: Some(true) }));
        h.push(t(102, 14, Some(15), Effect::Read { holder: Some(1) }));
        h.push(t(103, 16, Some(17), Effect::Read { holder: Some(2) }));
        let v = search(&h, None, &mut 100_000);
        assert!(matches!(v, Verdict::NeverAllocated { op: 103, .. }), "{v:?}");
        h.pop();
        assert_eq!(search(&h, None, &mut 10_000), Verdict::Linearizable);
    }

    /// Every order allowed by real time, unknown touches optional: the definition, slowly.
    fn brute_force(touches: &[Touch], placed: &mut Vec<bool>, holder: Holder) -> bool {
        if touches.iter().zip(placed.iter()).all(|(t, p)| *p || !t.required) {
            return true;
        }
        for (i, t) in touches.iter().enumerate() {
            let blocked = touches.iter().zip(placed.iter()).any(|(y, p)| !*p && y.complete_ns < t.invoke_ns);
            if placed[i] || blocked {
                continue;
            }
            let next = if t.required { t.effect.step(holder) } else { Some(t.effect.step_unknown(holder)) };
            if let Some(next) = next {
                placed[i] = true;
                let found = brute_force(touches, placed, next);
                placed[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn the_search_agrees_with_brute_force_on_small_histories() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut disagreements = Vec::new();
        let (mut yes, mut no) = (0, 0);
        for case in 0..20_000 {
            let n = 1 + rand(6) as usize;
            let touches: Vec<Touch> = (0..n)
                .map(|i| {
                    let owner = rand(3) as u32;
                    let listed = [Some(true), Some(false)][rand(2) as usize];
                    let required = rand(3) != 0;
                    let listed = if required { listed } else { None };
                    let effect = match rand(6) {
                        0 | 1 => Effect::Allocate { owner },
                        2 => Effect::ReleaseOwner { owner, listed },
                        3 => Effect::ReleaseAddress { listed },
                        4 => Effect::ReleaseNode { releases: vec![owner, (owner + 1) % 3], listed },
                        _ => Effect::Read { holder: [None, Some(owner)][rand(2) as usize] },
                    };
                    let invoke = rand(10);
                    let complete = if required { Some(invoke + rand(4)) } else { None };
                    t(i as u64, invoke, complete, effect)
                })
                .collect();
            let initial = [None, Some(0), Some(1)][rand(3) as usize];
            let expected = brute_force(&touches, &mut vec![false; n], initial);
            let got = search(&touches, initial, &mut 1_000_000);
            if expected {
                yes += 1
            } else {
                no += 1
            }
            if expected != (got == Verdict::Linearizable) {
                disagreements.push((case, initial, touches, got));
            }
        }
        assert!(disagreements.is_empty(), "{} disagreements, first: {:#?}", disagreements.len(), disagreements[0]);
        assert!(yes > 2_000 && no > 2_000, "{yes} linearizable, {no} not: the cases should mix both");
    }
}
