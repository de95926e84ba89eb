//! The server side of the log `offset` protocol (`lifecycle::decide` on `LogChunk` and
//! `Finish`, then `lifecycle::log_keep` for the per-task cap), driven by an agent that
//! resends, skips ahead and reorders chunks of its log: never panics; the server never
//! stores a byte at the wrong place (what it keeps is always a prefix of the agent's
//! log, plus at most one truncation note); its acknowledged size only grows and never
//! exceeds what the agent sent; a gap is refused naming the stored size; a finish is
//! accepted only once the whole log arrived; chunks of another session change nothing.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runops_proto::TaskStatus;
use runops_server::lifecycle::{Event, LogRoom, Refusal, TaskState, Write, decide, log_keep};

#[derive(Debug, Arbitrary)]
enum Op {
    /// The agent sends `log[start..start+len]` at offset `start`.
    Send { start: u16, len: u16 },
    /// A chunk whose claimed offset does not match its bytes (a confused agent).
    Lie { offset: u64, len: u16 },
    /// Another session sends.
    Foreign { offset: u16, len: u16 },
    /// The agent reports the result with this log size.
    Finish { size: u16 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    log: Vec<u8>,
    cap: u16,
    ops: Vec<Op>,
    /// Any state and chunk: no panic, whatever the values (received as the store reads it).
    wild: (u8, u64, u64, u32),
}

const STATUSES: [TaskStatus; 5] = [
    TaskStatus::Running,
    TaskStatus::Dispatched,
    TaskStatus::Success,
    TaskStatus::Failure,
    TaskStatus::Ready,
];

fuzz_target!(|input: Input| {
    let log = &input.log;
    let cap = u64::from(input.cap);
    let mut state = TaskState::new(TaskStatus::Running, false, 0);
    state.session_id = Some("s1".into());
    let mut kept: Vec<u8> = Vec::new();
    let mut kept_log = 0u64; // bytes of the log itself among `kept`
    let mut truncated = false;
    let mut lied_so_far = false;
    for op in &input.ops {
        let before = state.log_received;
        let (session, offset, bytes): (&str, u64, Vec<u8>) = match *op {
            Op::Send { start, len } => {
                let s = usize::from(start).min(log.len());
                let e = (s + usize::from(len)).min(log.len());
                ("s1", s as u64, log[s..e].to_vec())
            }
            Op::Lie { offset, len } => ("s1", offset, vec![b'?'; usize::from(len) % 64]),
            Op::Foreign { offset, len } => {
                ("s2", u64::from(offset), vec![b'!'; usize::from(len) % 64])
            }
            Op::Finish { size } => {
                let finish = Event::Finish {
                    session_id: "s1",
                    status: TaskStatus::Success,
                    failure_reason: None,
                    log_size: u64::from(size),
                    log_elsewhere: false,
                };
                match decide(&state, &finish) {
                    // A resent finish of a task that ended keeps the first result.
                    Ok(d) if state.status.is_final() => assert_eq!(d.write, Write::Nothing),
                    Ok(d) => {
                        assert!(
                            state.log_received >= u64::from(size),
                            "finished before the log arrived"
                        );
                        state = d.next;
                    }
                    Err(Refusal::LogIncomplete { stored }) => {
                        assert_eq!(stored, state.log_received);
                        assert!(stored < u64::from(size));
                    }
                    Err(Refusal::Ended(_)) => assert!(state.status.is_final()),
                    Err(r) => panic!("unexpected refusal of a finish: {r:?}"),
                }
                continue;
            }
        };
        lied_so_far |= matches!(op, Op::Lie { .. });
        let chunk = Event::LogChunk {
            session_id: session,
            offset,
            len: bytes.len() as u64,
        };
        match decide(&state, &chunk) {
            Ok(d) => {
                assert_eq!(session, "s1", "another session's chunk was taken");
                if let Write::AppendLog { skip } = d.write {
                    assert!(skip < bytes.len() as u64);
                    assert_eq!(offset + skip, before, "appended at the wrong place");
                    let new = &bytes[skip as usize..];
                    if !truncated {
                        let plan = log_keep(
                            new.len() as u64,
                            &LogRoom {
                                task: (cap, kept.len() as u64),
                                org: None,
                                server: None,
                            },
                        );
                        assert!(plan.keep <= new.len() as u64);
                        kept.extend_from_slice(&new[..plan.keep as usize]);
                        kept_log += plan.keep;
                        if let Some(note) = plan.note {
                            kept.extend_from_slice(note.as_bytes());
                            truncated = true;
                        }
                    }
                    assert_eq!(d.next.log_received, offset + bytes.len() as u64);
                } else {
                    assert_eq!(d.next.log_received, before);
                }
                state = d.next;
            }
            Err(Refusal::LogGap { stored }) => {
                assert_eq!(stored, before);
                assert!(offset > before);
            }
            Err(Refusal::NotYours(_)) => assert!(session != "s1" || state.status.is_final()),
            Err(Refusal::Ended(_)) => assert!(state.status.is_final()),
            Err(r) => panic!("unexpected refusal of a chunk: {r:?}"),
        }
        assert!(
            state.log_received >= before,
            "the acknowledged size went down"
        );
        if !lied_so_far {
            assert!(
                state.log_received <= log.len() as u64,
                "acknowledged bytes never sent"
            );
        }
    }
    // Without lies, what is kept is the log's prefix (then the note, if the cap hit).
    let lied = input.ops.iter().any(|op| matches!(op, Op::Lie { .. }));
    if !lied {
        assert_eq!(&kept[..kept_log as usize], &log[..kept_log as usize]);
        if !truncated {
            assert_eq!(kept_log, state.log_received);
        }
    }
    assert!(kept_log <= cap);

    let (status, received, offset, len) = input.wild;
    let mut wild = TaskState::new(STATUSES[usize::from(status) % STATUSES.len()], false, 0);
    wild.session_id = Some("s1".into());
    // The store keeps sizes as SQLite integers (at most i64::MAX); a chunk is at most
    // MAX_LOG_CHUNK_BYTES.
    wild.log_received = received % (i64::MAX as u64 + 1);
    let len = u64::from(len % (runops_proto::limits::MAX_LOG_CHUNK_BYTES as u32 + 1));
    let _ = decide(
        &wild,
        &Event::LogChunk {
            session_id: "s1",
            offset,
            len,
        },
    );
    let _ = decide(
        &wild,
        &Event::Finish {
            session_id: "s1",
            status: TaskStatus::Success,
            failure_reason: None,
            log_size: offset,
            log_elsewhere: false,
        },
    );
});
