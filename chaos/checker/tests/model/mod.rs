//! Valid histories from a sequential model of the allocator, made concurrent by jitter.
//!
//! Every operation takes effect at its own point `lp` on a line; its invoke is at or before `lp`
//! and its completion at or after it, so the `lp` order is a linearization and the history is
//! valid by construction. Unknown outcomes take effect or not by a coin flip, and some land after
//! their client gave up. Tokens, leases and stale agents ("zombies") are modelled so that stale
//! writes fail. One fault runs over part of the history; after it heals an allocation succeeds.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hc_checker::{
    Attachment, Call, FaultEvent, FaultPhase, Fence, FinalState, History, Holding, OkResult, Operation, Outcome, Owner,
    Record, ReleaseTarget,
};

/// The knobs a property test draws.
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    pub seed: u64,
    pub ops: usize,
    /// Percentage of operations whose outcome is unknown.
    pub unknown_pct: u64,
    /// How far invoke and completion may stray from the linearization point.
    pub jitter_ns: u64,
}

pub const STEP_NS: u64 = 1_000;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const RESERVATION: (&str, &str) = ("ns/db/0", "10.0.0.6");

pub struct Generated {
    pub history: History,
    pub recovery_bound_ns: u64,
    /// When the last fault stopped.
    pub heal_ns: u64,
}

/// splitmix64: small, seedable, good enough to draw schedules.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len() as u64) as usize)
    }
}

fn addresses() -> Vec<IpAddr> {
    (1..=6).map(|i| IpAddr::from([10, 0, 0, i])).collect()
}

fn reserved() -> IpAddr {
    RESERVATION.1.parse().expect("a literal address")
}

#[derive(Default)]
struct Model {
    holders: BTreeMap<IpAddr, Owner>,
    /// The node's current token (0: never granted).
    tokens: BTreeMap<String, u64>,
}

impl Model {
    fn held_by(&self, owner: &Owner) -> Option<IpAddr> {
        self.holders.iter().find(|(_, o)| *o == owner).map(|(a, _)| *a)
    }

    fn fenced(&self, fence: &Option<Fence>) -> bool {
        fence.as_ref().is_none_or(|f| f.token > 0 && self.tokens.get(&f.node) == Some(&f.token))
    }

    /// What the call returns now (`None`: refused), without applying it.
    fn answer(&self, call: &Call) -> Option<OkResult> {
        match call {
            Call::Allocate { owner, requested, reservation, fence, .. } => {
                if !self.fenced(fence) {
                    return None;
                }
                if let Some(a) = self.held_by(owner) {
                    return Some(OkResult::Allocated { address: a });
                }
                let free = |a: &IpAddr| !self.holders.contains_key(a);
                let address = match (requested, reservation) {
                    (Some(a), _) => free(a).then_some(*a),
                    (None, Some(_)) => free(&reserved()).then_some(reserved()),
                    (None, None) => addresses().into_iter().find(|a| *a != reserved() && free(a)),
                }?;
                Some(OkResult::Allocated { address })
            }
            Call::Release { target, fence } => {
                if !self.fenced(fence) {
                    return None;
                }
                let released = match target {
                    ReleaseTarget::Owner(o) => self.held_by(o).into_iter().collect(),
                    ReleaseTarget::Address(a) => self.holders.contains_key(a).then_some(*a).into_iter().collect(),
                };
                Some(OkResult::Released { released })
            }
            Call::Grant { node } => Some(OkResult::Granted { token: self.tokens.get(node).copied().unwrap_or(0) + 1 }),
            Call::Expire { .. } => Some(OkResult::Done),
            Call::Read { address } => Some(OkResult::Read { holder: self.holders.get(address).cloned() }),
            Call::NodeGone { node } => Some(OkResult::Released {
                released: self.holders.iter().filter(|(_, o)| o.node == *node).map(|(a, _)| *a).collect(),
            }),
            Call::Reconcile { fence, valid } => {
                if !self.fenced(&Some(fence.clone())) {
                    return None;
                }
                let released = self
                    .holders
                    .iter()
                    .filter(|(_, o)| o.node == fence.node && !valid.contains(&o.attachment()))
                    .map(|(a, _)| *a)
                    .collect();
                Some(OkResult::Released { released })
            }
        }
    }

    fn apply(&mut self, call: &Call, result: &OkResult) {
        match (call, result) {
            (Call::Allocate { owner, .. }, OkResult::Allocated { address }) => {
                self.holders.insert(*address, owner.clone());
            }
            (Call::Grant { node }, OkResult::Granted { token }) => {
                self.tokens.insert(node.clone(), *token);
            }
            (_, OkResult::Released { released }) => {
                for a in released {
                    self.holders.remove(a);
                }
            }
            _ => {}
        }
    }
}

struct Generator {
    rng: Rng,
    knobs: Knobs,
    model: Model,
    owners: Vec<Owner>,
    /// What each process believes its node's token is.
    known: BTreeMap<String, (String, u64)>,
    records: Vec<Record>,
    next_id: u64,
}

impl Generator {
    fn lp(&self, step: usize) -> u64 {
        10 * (self.knobs.jitter_ns + STEP_NS) + STEP_NS * step as u64
    }

    fn owner(&mut self) -> Owner {
        if self.owners.is_empty() || self.rng.chance(40) {
            let node = self.rng.pick(&NODES).copied().unwrap_or("n1");
            let owner =
                Owner { container_id: format!("c{}", self.owners.len()), interface: "eth0".into(), node: node.into() };
            self.owners.push(owner);
        }
        let i = self.rng.below(self.owners.len() as u64) as usize;
        self.owners[i].clone()
    }

    /// The process acting for `node` and its fence: the agent, or now and then a zombie with an old token.
    fn process(&mut self, node: &str) -> (String, Option<Fence>) {
        let zombie = format!("zombie-{node}");
        let name =
            if self.known.contains_key(&zombie) && self.rng.chance(25) { zombie } else { format!("agent-{node}") };
        let fence = self.known.get(&name).map(|(n, t)| Fence { node: n.clone(), token: *t });
        (name, fence)
    }

    fn call(&mut self) -> (String, Call) {
        let roll = self.rng.below(100);
        let address = self.rng.pick(&addresses()).copied().unwrap_or_else(reserved);
        match roll {
            0..35 => {
                let owner = self.owner();
                let (process, fence) = self.process(&owner.node.clone());
                let (requested, reservation) = match self.rng.below(10) {
                    0 => (Some(address), None),
                    1 => (None, Some(RESERVATION.0.to_owned())),
                    _ => (None, None),
                };
                (process, Call::Allocate { owner, pool: Some("blue".into()), requested, reservation, fence })
            }
            35..50 => {
                let owner = self.owner();
                let (process, fence) = self.process(&owner.node.clone());
                (process, Call::Release { target: ReleaseTarget::Owner(owner), fence })
            }
            50..54 => ("operator".into(), Call::Release { target: ReleaseTarget::Address(address), fence: None }),
            54..75 => ("reader".into(), Call::Read { address }),
            75..84 => {
                let node = self.rng.pick(&NODES).copied().unwrap_or("n1");
                (format!("agent-{node}"), Call::Grant { node: node.into() })
            }
            84..87 => {
                let node = self.rng.pick(&NODES).copied().unwrap_or("n1");
                ("observer".into(), Call::Expire { node: node.into() })
            }
            87..90 => {
                let node = self.rng.pick(&NODES).copied().unwrap_or("n1");
                ("operator".into(), Call::NodeGone { node: node.into() })
            }
            _ => {
                let node = self.rng.pick(&NODES).copied().unwrap_or("n1");
                let (process, fence) = self.process(node);
                let fence = fence.unwrap_or(Fence { node: node.into(), token: 0 });
                let valid: Vec<Attachment> = self
                    .owners
                    .iter()
                    .filter(|o| o.node == node)
                    .map(Owner::attachment)
                    .filter(|_| self.rng.chance(60))
                    .collect();
                (process, Call::Reconcile { fence, valid })
            }
        }
    }

    /// Decides the outcome of `call` at `lp`, applies it to the model, records it.
    fn run(&mut self, process: String, call: Call, lp: u64, forced_ok: bool) {
        let j = self.knobs.jitter_ns;
        let answer = self.model.answer(&call);
        let (outcome, applied) = if !forced_ok && self.rng.chance(self.knobs.unknown_pct) {
            let applied = answer.clone().filter(|_| self.rng.chance(50));
            (Outcome::Unknown { error: Some("deadline exceeded".into()) }, applied)
        } else {
            match answer {
                Some(result) if forced_ok || !self.rng.chance(5) => (Outcome::Ok(result.clone()), Some(result)),
                Some(_) => (Outcome::Fail { error: Some("not leader".into()) }, None),
                None => (Outcome::Fail { error: Some("refused".into()) }, None),
            }
        };
        let (invoke_ns, complete_ns) = match &outcome {
            _ if forced_ok => (lp, lp + self.rng.below(j + 1)),
            // Landed after its client gave up.
            Outcome::Unknown { .. } if self.rng.chance(30) => {
                let invoke = lp - self.rng.below(4 * j + 1);
                (invoke, invoke + self.rng.below(j + 1))
            }
            _ => (lp - self.rng.below(j + 1), lp + self.rng.below(j + 1)),
        };
        if let Some(result) = &applied {
            self.model.apply(&call, result);
        }
        if let (Call::Grant { node }, Outcome::Ok(OkResult::Granted { token })) = (&call, &outcome) {
            let agent = format!("agent-{node}");
            if let Some(old) = self.known.insert(agent, (node.clone(), *token))
                && self.rng.chance(50)
            {
                self.known.insert(format!("zombie-{node}"), old);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.records.push(Record::Op(Operation { id, process, invoke_ns, complete_ns, call, outcome }));
    }

    fn fault(&mut self, phase: FaultPhase, at_ns: u64) {
        self.records.push(Record::Fault(FaultEvent { name: "partition".into(), phase, at_ns, detail: None }));
    }
}

pub fn generate(knobs: Knobs) -> Generated {
    let mut g = Generator {
        rng: Rng::new(knobs.seed),
        knobs,
        model: Model::default(),
        owners: Vec::new(),
        known: BTreeMap::new(),
        records: Vec::new(),
        next_id: 1,
    };
    let fault_start = g.rng.below(knobs.ops as u64 + 1) as usize;
    let mut step = 0;
    for i in 0..knobs.ops {
        if i == fault_start {
            g.fault(FaultPhase::Start, g.lp(step));
            step += 1;
        }
        let (process, call) = g.call();
        g.run(process, call, g.lp(step), false);
        step += 1;
    }
    if fault_start >= knobs.ops {
        g.fault(FaultPhase::Start, g.lp(step));
        step += 1;
    }
    let heal_ns = g.lp(step);
    g.fault(FaultPhase::Stop, heal_ns);
    step += 1;
    // After the heal: make room if needed, then one allocation that succeeds.
    let dynamic: Vec<IpAddr> = addresses().into_iter().filter(|a| *a != reserved()).collect();
    if dynamic.iter().all(|a| g.model.holders.contains_key(a)) {
        let call = Call::Release { target: ReleaseTarget::Address(dynamic[0]), fence: None };
        g.run("operator".into(), call, g.lp(step), true);
        step += 1;
    }
    let owner = Owner { container_id: "after-heal".into(), interface: "eth0".into(), node: "n1".into() };
    let call = Call::Allocate { owner, pool: None, requested: None, reservation: None, fence: None };
    g.run("operator".into(), call, g.lp(step), true);
    step += 1;
    let address = g.rng.pick(&addresses()).copied().unwrap_or_else(reserved);
    g.run("reader".into(), Call::Read { address }, g.lp(step), true);
    step += 1;

    let invoke_ns = g.lp(step) + 10 * knobs.jitter_ns;
    let allocations = g.model.holders.iter().map(|(a, o)| Holding { address: *a, owner: o.clone() }).collect();
    let id = g.next_id;
    g.records.push(Record::FinalState(FinalState { id, invoke_ns, complete_ns: invoke_ns + 100, allocations }));
    Generated { history: History::new(g.records), recovery_bound_ns: 3 * STEP_NS + knobs.jitter_ns, heal_ns }
}
