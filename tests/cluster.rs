//! Fault tests of the gateway cluster, with real `sensorchain run`
//! processes on loopback (the fixture: tests/common/cluster.rs): leaders
//! killed under load, two of five down and then a third, partitions
//! (minority with the old leader, one-way loss, flapping) through the
//! test's own TCP proxy, a leader frozen with SIGSTOP past the election
//! timeout, a follower restarted from an empty data directory, a new
//! gateway added while the leader is killed, every member killed at once. After each, the members are stopped and the
//! safety check runs over their stored chains: one chain (identical
//! prefixes, the same head state), at most one certified block per height,
//! every certificate a quorum of valid votes, every acknowledged reading
//! stored exactly once in a final block, `sensorchain audit` clean.
//!
//! Waits are bounded generously ([`BOUND`]): they are never the thing
//! tested. The tests run one at a time (they share two cores with
//! everything else). `SENSORCHAIN_SOAK=1` runs the long variants: five
//! members where the default uses three, more rounds, longer loads.

mod common;
#[path = "common/cluster.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fixture::{BOUND, Cluster, ELECTION_MS, Sent};

/// The long variants (`SENSORCHAIN_SOAK=1`).
fn soak() -> bool {
    std::env::var_os("SENSORCHAIN_SOAK").is_some_and(|v| v != "0")
}

/// One cluster at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Members of the clusters that do not need five.
fn members() -> usize {
    if soak() { 5 } else { 3 }
}

/// A longer wait than any election takes to start (a member's election
/// timeout is drawn from `ELECTION_MS`).
fn past_election_timeout() -> Duration {
    Duration::from_millis(ELECTION_MS.1 * 2)
}

/// Readings acknowledged to sensors of `ms` sent at or after `from` and
/// answered before `until`.
fn acked_between<'a>(
    sent: &'a [Sent],
    ms: &[usize],
    from: Instant,
    until: Instant,
) -> Vec<&'a Sent> {
    sent.iter()
        .filter(|s| s.acked() && ms.contains(&s.member) && s.sent >= from && s.answered < until)
        .collect()
}

fn others(c: &Cluster, not: &[usize]) -> Vec<usize> {
    c.all().into_iter().filter(|m| !not.contains(m)).collect()
}

/// The members' last applied log index and final height, as they say.
/// Every member of `ms`'s applied index and finalized height; asks again
/// until each of them answers (a comparison of two sets of positions must
/// not drop a member that was merely slow to answer once).
fn positions(c: &Cluster, ms: &[usize]) -> Vec<(usize, Option<u64>, Option<u64>)> {
    let t0 = Instant::now();
    loop {
        let got: Vec<_> = c
            .statuses(ms)
            .into_iter()
            .map(|(m, s)| (m, s.applied_index, s.finalized_height))
            .collect();
        if got.len() == ms.len() {
            return got;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "members {ms:?} did not all answer their status within 60 s: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A started cluster of `n` members (two sensors each, sending `window`
/// readings at a time) that has acknowledged its first readings: the
/// cluster, its load, the leader and its term.
fn begin(n: usize, window: usize) -> (Cluster, fixture::Load, usize, u64) {
    let t = Instant::now();
    let c = Cluster::start(n, 2 * n);
    c.wait_leader(&c.all(), None, 0);
    let led = t.elapsed();
    let load = c.load(2, window);
    load.wait_acked_since(t, None, 20);
    // the leader may have changed meanwhile
    let l = c.wait_leader(&c.all(), None, 0);
    let term = c.status(l).map_or(0, |s| s.term);
    eprintln!(
        "{n} members: member {} leads after {led:.1?}, first readings acknowledged after {:.1?}",
        l + 1,
        t.elapsed()
    );
    (c, load, l, term)
}

/// Stops the load, waits until the members agree, stops them and runs the
/// safety check.
fn done(c: &mut Cluster, load: fixture::Load, what: &str, t0: Instant) {
    let t = Instant::now();
    let sent = c.stop_load(load);
    let stopped = t.elapsed();
    let height = c.wait_converged();
    let converged = t.elapsed();
    let report = c.stop_and_check(&sent);
    eprintln!(
        "{what}: load stopped in {stopped:.1?}, converged at height {height} after {converged:.1?}, \
         checked {report:?} after {:.1?}; {:.1?} in all",
        t.elapsed(),
        t0.elapsed()
    );
}

/// The leader is SIGKILLed under load and restarted, again and again:
/// each time another member leads, readings go on being acknowledged, and
/// the restarted member catches up (before the next round).
#[test]
fn leader_killed_repeatedly_under_load() {
    let _g = serial();
    let t0 = Instant::now();
    let rounds = if soak() { 10 } else { 3 };
    let (mut c, load, _, _) = begin(members(), 4);
    for round in 0..rounds {
        let l = c.wait_leader(&c.all(), None, 0);
        let term = c.status(l).map_or(0, |s| s.term);
        c.kill(l);
        let killed = Instant::now();
        let rest = others(&c, &[l]);
        let nl = c.wait_leader(&rest, Some(l), term);
        let elected = killed.elapsed();
        load.wait_acked_since(killed, None, 10);
        let progress = killed.elapsed();
        c.start_member(l);
        c.wait_caught_up(l);
        eprintln!(
            "round {round}: member {} killed, member {} leads after {elected:.1?}, progress after {progress:.1?}, \
             member {} restarted and caught up after {:.1?}; {}",
            l + 1,
            nl + 1,
            l + 1,
            killed.elapsed(),
            load.summary()
        );
    }
    load.wait_acked_since(Instant::now(), None, 10);
    done(&mut c, load, "leader killed", t0);
}

/// Five members: any two SIGKILLed, the other three go on; a third
/// killed, nothing more is acknowledged while only two run (and nothing
/// forks); the three restarted, progress again.
#[test]
fn two_of_five_down_progress_third_down_nothing_acknowledged() {
    let _g = serial();
    let t0 = Instant::now();
    let (mut c, load, l, term) = begin(5, 2);
    // the leader and a follower
    let first = [l, (l + 1) % 5];
    c.kill_many(&first);
    let t2 = Instant::now();
    let rest = others(&c, &first);
    let nl = c.wait_leader(&rest, None, term);
    load.wait_acked_since(t2, None, 20);
    eprintln!(
        "members {:?} down: member {} leads; {}",
        first.map(|m| m + 1),
        nl + 1,
        load.summary()
    );
    // a third: a follower (the leader stays, and can commit nothing)
    let third = *rest.iter().find(|&&m| m != nl).unwrap();
    c.kill(third);
    let t3 = Instant::now();
    let live = others(&c, &[first[0], first[1], third]);
    std::thread::sleep(past_election_timeout());
    let before = positions(&c, &live);
    std::thread::sleep(past_election_timeout());
    let after = positions(&c, &live);
    let restart = Instant::now();
    let sent = load.snapshot();
    let sent_meanwhile = sent.iter().filter(|s| s.sent >= t3).count();
    let wrongly = acked_between(&sent, &c.all(), t3, restart);
    assert!(
        wrongly.is_empty(),
        "acknowledged while only 2 of 5 ran: {wrongly:#?}"
    );
    assert_eq!(
        before, after,
        "a member applied entries while only 2 of 5 ran"
    );
    eprintln!(
        "3 of 5 down for {:.1?}: {sent_meanwhile} readings answered meanwhile, none acknowledged",
        t3.elapsed()
    );
    let term = c.status(nl).map_or(0, |s| s.term);
    c.start_all();
    let back = Instant::now();
    let l = c.wait_leader(&c.all(), None, 0);
    load.wait_acked_since(back, None, 20);
    eprintln!(
        "the three restarted: member {} leads in term {} (term {term} before)",
        l + 1,
        c.status(l).map_or(0, |s| s.term)
    );
    done(&mut c, load, "two of five, then three", t0);
}

/// A partition: the old leader (with one follower, of five) on the
/// minority side. The majority elects a leader and commits; the minority
/// acknowledges and applies nothing new; healed, everyone converges on
/// one chain and the old leader's side serves again.
#[test]
fn partition_minority_with_old_leader() {
    let _g = serial();
    let t0 = Instant::now();
    let n = members();
    let (mut c, load, l, term) = begin(n, 2);
    let minority: Vec<usize> = (0..(n - 1) / 2).map(|k| (l + k) % n).collect();
    let majority = others(&c, &minority);
    c.proxy.isolate(&minority);
    let cut = Instant::now();
    let nl = c.wait_leader(&majority, None, term);
    load.wait_acked_since(cut, Some(&majority), 20);
    std::thread::sleep(past_election_timeout() / 2);
    let before = positions(&c, &minority);
    std::thread::sleep(past_election_timeout());
    let after = positions(&c, &minority);
    assert_eq!(before, after, "the minority applied entries");
    let still = c.status(l).map(|s| s.role);
    c.proxy.heal();
    let healed = Instant::now();
    let sent = load.snapshot();
    let wrongly = acked_between(&sent, &minority, cut, healed);
    assert!(
        wrongly.is_empty(),
        "the minority acknowledged: {wrongly:#?}"
    );
    eprintln!(
        "partitioned {:.1?}: member {} leads the majority, the old leader {} was {still:?}; {}",
        cut.elapsed(),
        nl + 1,
        l + 1,
        load.summary()
    );
    c.wait_leader(&c.all(), None, term);
    load.wait_acked_since(healed, None, 20);
    load.wait_acked_since(healed, Some(&minority), 1);
    done(&mut c, load, "partition", t0);
}

/// One-way loss: what the leader sends is lost (it still hears the
/// others). The others stop hearing it and elect one of them, which
/// commits; healed, the old leader steps down and everyone converges.
#[test]
fn one_way_loss_from_the_leader() {
    let _g = serial();
    let t0 = Instant::now();
    let (mut c, load, l, term) = begin(members(), 2);
    let rest = others(&c, &[l]);
    for &m in &rest {
        c.proxy.block(l, m);
    }
    let cut = Instant::now();
    let nl = c.wait_leader(&rest, Some(l), term);
    load.wait_acked_since(cut, Some(&rest), 20);
    c.proxy.heal();
    let healed = Instant::now();
    eprintln!(
        "one-way loss from member {} for {:.1?}: member {} leads; {}",
        l + 1,
        cut.elapsed(),
        nl + 1,
        load.summary()
    );
    c.wait_leader(&c.all(), None, term);
    load.wait_acked_since(healed, None, 20);
    done(&mut c, load, "one-way loss", t0);
}

/// The leader's links flap (cut off, back, cut off, …) under load; then
/// healed: progress, one chain.
#[test]
fn flapping_links() {
    let _g = serial();
    let t0 = Instant::now();
    let cycles = if soak() { 40 } else { 8 };
    let (mut c, load, _, _) = begin(members(), 2);
    let mut rng = Lcg::new();
    let mut target = 0;
    for _ in 0..cycles {
        // the leader if one is known, else anyone
        if let Some((m, _)) = c
            .statuses(&c.all())
            .into_iter()
            .find(|(_, s)| s.role == "leader")
        {
            target = m;
        }
        c.proxy.isolate(&[target]);
        std::thread::sleep(Duration::from_millis(rng.range(150, 1500)));
        c.proxy.heal();
        std::thread::sleep(Duration::from_millis(rng.range(150, 1500)));
    }
    let healed = Instant::now();
    eprintln!("{cycles} flaps: {}", load.summary());
    c.wait_leader(&c.all(), None, 0);
    load.wait_acked_since(healed, None, 20);
    done(&mut c, load, "flapping", t0);
}

/// The leader is frozen (SIGSTOP) past the election timeout: another
/// member leads meanwhile and commits; thawed (SIGCONT), the old leader
/// steps down and follows; nothing forks, nothing acknowledged is lost.
#[test]
fn leader_frozen_past_election_timeout() {
    let _g = serial();
    let t0 = Instant::now();
    let (mut c, load, l, term) = begin(members(), 2);
    c.pause(l);
    let frozen = Instant::now();
    let rest = others(&c, &[l]);
    let nl = c.wait_leader(&rest, Some(l), term);
    load.wait_acked_since(frozen, Some(&rest), 20);
    let new_term = c.status(nl).map_or(0, |s| s.term);
    std::thread::sleep(past_election_timeout().saturating_sub(frozen.elapsed()));
    c.resume(l);
    let thawed = Instant::now();
    // the old leader steps down and follows
    let t = Instant::now();
    loop {
        let s = c.status(l);
        if let Some(s) = &s
            && s.role == "follower"
            && s.leader.is_some()
            && s.term >= new_term
        {
            break;
        }
        assert!(
            t.elapsed() < BOUND,
            "the old leader did not step down: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "member {} frozen {:.1?}: member {} led in term {new_term}; stepped down {:.1?} after SIGCONT; {}",
        l + 1,
        thawed - frozen,
        nl + 1,
        thawed.elapsed(),
        load.summary()
    );
    load.wait_acked_since(thawed, None, 20);
    done(&mut c, load, "frozen leader", t0);
}

/// A follower restarted from an empty data directory (its key and
/// configuration kept) finds at its start that the leader had matched
/// entries it no longer has: the leader removes it and adds it again as a
/// learner (it never votes with a forgotten vote or log), it is replicated
/// the log and catches up, then is a voter again.
#[test]
fn wiped_follower_catches_up() {
    let _g = serial();
    let t0 = Instant::now();
    let n = members();
    let (mut c, load, l, _) = begin(n, 4);
    load.wait_acked_since(t0, None, if soak() { 2000 } else { 200 });
    let f = (l + 1) % n;
    c.kill(f);
    c.wipe(f);
    let wiped = Instant::now();
    load.wait_acked_since(wiped, None, 20);
    c.start_member(f);
    let back = Instant::now();
    // it catches up to where the others were when it came back
    let target = c.others_height(f);
    // it catches up to where the others were when it came back
    c.wait_reached(f, target);
    // and is a voter again
    c.wait_voter(f);
    eprintln!(
        "member {} wiped: back at height {target} and a voter in {:.1?}; {}",
        f + 1,
        back.elapsed(),
        load.summary()
    );
    load.wait_acked_since(back, None, 20);
    done(&mut c, load, "wiped follower", t0);
}

/// A follower away while the others snapshot and purge their logs past it
/// catches up by snapshot and back-fill; SIGKILLed half way through the
/// back-fill (each back-filled block made to wait by the test hook
/// `SENSORCHAIN_TEST_BACKFILL_PAUSE_MS`), it is restarted, takes the
/// snapshot again, back-fills from the longer valid prefix it kept, and
/// ends with the others' chain.
#[test]
fn snapshot_catch_up_killed_half_way() {
    let _g = serial();
    let t0 = Instant::now();
    let n = members();
    let t = Instant::now();
    let mut c = Cluster::new_with(
        n,
        2 * n,
        fixture::Options {
            snapshot_every: 32,
            snapshot_keep: 0,
            env: vec![("SENSORCHAIN_TEST_BACKFILL_PAUSE_MS".into(), "25".into())],
            ..Default::default()
        },
    );
    c.start_all();
    c.wait_leader(&c.all(), None, 0);
    let load = c.load(2, 4);
    load.wait_acked_since(t, None, 20);
    let l = c.wait_leader(&c.all(), None, 0);
    let f = (l + 1) % n;
    let before = c.status(f).map_or(0, |s| s.height);
    c.kill(f);
    // the others go on, snapshotting every 32 entries and purging below
    let away = Instant::now();
    let heights = |c: &Cluster| {
        c.statuses(&others(c, &[f]))
            .iter()
            .map(|(_, s)| s.height)
            .max()
            .unwrap_or(0)
    };
    while heights(&c) < before + 150 {
        assert!(away.elapsed() < BOUND, "the others did not go on");
        std::thread::sleep(Duration::from_millis(100));
    }
    load.wait_acked_since(away, None, 20);
    let target = heights(&c);
    c.start_member(f);
    // its height rises block by block as it back-fills: kill it half way
    let t = Instant::now();
    let at_kill = loop {
        if let Some(s) = c.status(f)
            && s.height > before + 10
        {
            break s.height;
        }
        assert!(
            t.elapsed() < BOUND,
            "member {} did not start its back-fill",
            f + 1
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    c.kill(f);
    assert!(
        at_kill < target,
        "killed at height {at_kill}, not below the snapshot's head {target}: not half way"
    );
    c.start_member(f);
    let back = Instant::now();
    let t = Instant::now();
    loop {
        let s = c.status(f);
        if s.as_ref()
            .is_some_and(|s| s.height >= target && s.finalized_height >= Some(target))
        {
            break;
        }
        assert!(
            t.elapsed() < BOUND,
            "member {} did not reach height {target} after its restart: {s:?}",
            f + 1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "member {} away from height {before}, killed half way at {at_kill} of {target}, caught up {:.1?} after its restart; {}",
        f + 1,
        back.elapsed(),
        load.summary()
    );
    load.wait_acked_since(back, None, 20);
    done(&mut c, load, "snapshot catch-up killed half way", t0);
}

/// A new gateway, its key not in the genesis, is added with `sensorchain
/// cluster add` (the admin grants its key `validate,connect`, then the
/// leader adds it as a learner and promotes it), and the leader is
/// SIGKILLed as soon as the new member shows in its membership, in the
/// middle of the change. The others elect a leader; the operator runs the
/// same command again against it; the new gateway ends a voter with the
/// others' chain and takes readings, and the old leader, restarted,
/// follows. The check covers the validator set that changed at the grant.
#[test]
fn member_added_while_the_leader_is_killed() {
    let _g = serial();
    let t0 = Instant::now();
    let founders = members();
    let n = founders + 1;
    let j = n - 1;
    let mut c = Cluster::new_with(
        n,
        2 * n,
        fixture::Options {
            joiners: 1,
            ..Default::default()
        },
    );
    c.start_all();
    let founding: Vec<usize> = (0..founders).collect();
    c.wait_leader(&founding, None, 0);
    let load = c.load(2, 4);
    load.wait_acked_since(t0, None, 20);
    let l = c.wait_leader(&founding, None, 0);
    let term = c.status(l).map_or(0, |s| s.term);
    let admin = c.root.join("admin.key");
    sensorchain_gateway::keys::write_keypair(&admin, &sensorchain_gateway::testkit::admin(), false)
        .unwrap();
    let joiner_key = c.keys[j].public().to_string();
    let joiner_addr = c.members[j]
        .addrs
        .expect("the joiner runs")
        .peer
        .to_string();
    let id = (j + 1).to_string();
    let add = |c: &Cluster, at: usize| {
        let api = format!("http://{}", c.members[at].addrs.expect("runs").api);
        let mut cmd = std::process::Command::new(common::bin());
        cmd.args(["cluster", "add", "--api", &api, "--key"])
            .arg(&admin)
            .args(["--id", &id, "--addr", &joiner_addr])
            .args(["--gateway-key", &joiner_key, "--wait-secs", "120"])
            .env("SENSORCHAIN_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let mut first = add(&c, l).spawn().unwrap();
    // the leader has begun the change: the new member is in its membership
    let t = Instant::now();
    loop {
        let listed = c
            .status(l)
            .is_some_and(|s| s.members.iter().any(|m| m.id == j as u64 + 1));
        if listed {
            break;
        }
        if let Ok(Some(status)) = first.try_wait() {
            let out = first.wait_with_output().unwrap();
            panic!(
                "cluster add ended ({status}) before member {} was listed: {}{}",
                j + 1,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            t.elapsed() < BOUND,
            "the leader never listed the new member"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.kill(l);
    let killed = Instant::now();
    let out = first.wait_with_output().unwrap();
    eprintln!(
        "first cluster add, its leader killed: {} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rest = others(&c, &[l]);
    let nl = c.wait_leader(&rest, Some(l), term);
    // the operator runs the same command against the new leader
    let t = Instant::now();
    loop {
        let out = add(&c, nl).output().unwrap();
        if out.status.success() {
            break;
        }
        eprintln!(
            "cluster add again: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(t.elapsed() < BOUND, "cluster add kept failing");
        std::thread::sleep(Duration::from_millis(500));
    }
    // every running member has the new gateway as a voter
    let t = Instant::now();
    loop {
        let running = c.running();
        let st = c.statuses(&running);
        let voter = st.len() == running.len()
            && st
                .iter()
                .all(|(_, s)| s.members.iter().any(|m| m.id == j as u64 + 1 && m.voter));
        if voter {
            break;
        }
        assert!(
            t.elapsed() < BOUND,
            "member {} is not a voter everywhere: {st:#?}",
            j + 1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let added = killed.elapsed();
    c.start_member(l);
    c.wait_caught_up(l);
    c.wait_caught_up(j);
    let back = Instant::now();
    load.wait_acked_since(back, Some(&[j]), 5);
    eprintln!(
        "member {} added while leader {} was killed: a voter everywhere {added:.1?} after the kill, \
         member {} led; the old leader caught up; {}",
        j + 1,
        l + 1,
        nl + 1,
        load.summary()
    );
    done(&mut c, load, "member added while the leader is killed", t0);
}

/// Every member SIGKILLed at once mid-load, then all restarted: every
/// acknowledged reading is there, the chains identical.
#[test]
fn all_killed_at_once_mid_load() {
    let _g = serial();
    let t0 = Instant::now();
    let rounds = if soak() { 8 } else { 2 };
    let (mut c, load, _, _) = begin(members(), 4);
    for round in 0..rounds {
        load.wait_acked_since(Instant::now(), None, 30);
        c.kill_many(&c.all());
        c.start_all();
        let back = Instant::now();
        let l = c.wait_leader(&c.all(), None, 0);
        let led = back.elapsed();
        load.wait_acked_since(back, None, 10);
        eprintln!(
            "round {round}: all killed and restarted, member {} leads after {led:.1?}, progress after {:.1?}; {}",
            l + 1,
            back.elapsed(),
            load.summary()
        );
    }
    load.wait_acked_since(Instant::now(), None, 20);
    done(&mut c, load, "all killed", t0);
}

/// A small deterministic generator for the flapping times (seed printed).
struct Lcg(u64);

impl Lcg {
    fn new() -> Lcg {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        eprintln!("flapping seed {seed}");
        Lcg(seed)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}
