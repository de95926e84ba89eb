//! The spinner `tasks create` and `tasks logs -f` show on a terminal while a task
//! waits for review or for an agent, saying what it waits for (and when no matching
//! agent is connected, how to start one), then `running` until the first output.
//! When stderr is not a terminal nothing is drawn: the reasons for a wait (pending
//! review, no agent with the target's tags) are each written once as a plain line.

use runops_client::Client;
use runops_proto::TaskStatus;
use runops_proto::api::Task;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Redraw rate: smooth enough to look alive, cheap on a slow terminal.
const FRAME_INTERVAL: Duration = Duration::from_millis(100);
/// How often the spinner asks the server about the task and the live agents; the
/// message stays current without loading the server.
const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// The first look at the task, its target and the live agents comes this long after
/// the task was created: a task that an agent takes at once (the usual case) needs no
/// explanation, and those three requests would only load the server beside the
/// follow. A wait for review is known without asking (the created task says so).
const FIRST_LOOK: Duration = Duration::from_millis(300);

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Width assumed when the terminal does not say.
const DEFAULT_WIDTH: usize = 80;

/// The width of the terminal on stderr, in columns.
fn stderr_width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a `winsize` into the struct we pass.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        DEFAULT_WIDTH
    }
}

/// Cuts `line` to fit in `width` columns: a wrapped spinner line could not be cleared
/// with one carriage return.
fn fit(line: &str, width: usize) -> String {
    let max = width.saturating_sub(1).max(1);
    if line.chars().count() <= max {
        line.to_string()
    } else {
        let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Clears the current stderr line (the spinner's), when stderr is a terminal.
pub(crate) fn clear_line() {
    if std::io::stderr().is_terminal() {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

/// A running spinner; [`Spinner::finish`] stops it and clears its line.
pub(crate) struct Spinner {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
}

impl Spinner {
    /// Starts a spinner for `task` when it has not started yet: drawn when stderr is a
    /// terminal, else one line per reason for the wait.
    pub(crate) fn start(client: &Client, task: &Task) -> Option<Spinner> {
        if !waiting(task.status) {
            return None;
        }
        let (stop, stop_rx) = oneshot::channel();
        let handle = if std::io::stderr().is_terminal() {
            tokio::spawn(spin(client.clone(), task.clone(), stop_rx))
        } else {
            tokio::spawn(explain_wait(client.clone(), task.clone(), stop_rx))
        };
        Some(Spinner {
            stop: Some(stop),
            handle,
        })
    }

    /// Stops the spinner and waits until its line is cleared.
    pub(crate) async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.handle).await;
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        // Dropped without finish (Ctrl-C): the task clears its line when it sees this.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The task has not started running yet.
fn waiting(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Created
            | TaskStatus::PendingReview
            | TaskStatus::Approved
            | TaskStatus::Ready
            | TaskStatus::Dispatched
    )
}

/// What the spinner knows about the wait.
#[derive(Debug, Clone)]
pub(crate) struct WaitState {
    pub task_id: i64,
    pub status: TaskStatus,
    /// The target's tags, once known (`Some(None)`: untagged).
    pub tags: Option<Option<String>>,
    /// Whether an agent with those tags is connected, once known.
    pub agent_connected: Option<bool>,
    /// The agent the task was offered to.
    pub agent: Option<String>,
    /// How far its approvals are (`0 of 1 (group dba)`), for a task in review.
    pub review: Option<String>,
}

fn norm_tags(t: Option<&str>) -> Option<&str> {
    t.map(str::trim).filter(|s| !s.is_empty())
}

/// The spinner's sentence for a wait state.
pub(crate) fn wait_message(s: &WaitState) -> String {
    let id = s.task_id;
    match s.status {
        TaskStatus::Running => format!("task {id} is running…"),
        TaskStatus::PendingReview => match &s.review {
            Some(p) => format!("task {id} is waiting for review: {p}"),
            None => format!("task {id} is waiting for review…"),
        },
        TaskStatus::Approved => format!(
            "task {id} is approved and waits for its creator to run it (`runops tasks run {id}`)…"
        ),
        TaskStatus::Dispatched => match &s.agent {
            Some(a) => format!("task {id} was handed to agent {a}, starting…"),
            None => format!("task {id} was handed to an agent, starting…"),
        },
        _ => {
            let tags = s.tags.as_ref().map(|t| norm_tags(t.as_deref()));
            let waiting_for = match tags {
                Some(Some(t)) => format!("waiting for an agent with tags `{t}`"),
                Some(None) => "waiting for an agent without tags".to_string(),
                None => "waiting for an agent".to_string(),
            };
            match (s.agent_connected, tags) {
                (Some(false), Some(Some(t))) => {
                    format!(
                        "no agent with tags `{t}` is connected; start one: TAGS={t} runops agent"
                    )
                }
                (Some(false), Some(None)) => {
                    "no agent without tags is connected; start one: runops agent".to_string()
                }
                _ => format!("{waiting_for}…"),
            }
        }
    }
}

async fn spin(client: Client, task: Task, mut stop: oneshot::Receiver<()>) {
    let started = Instant::now();
    let mut state = WaitState {
        task_id: task.id,
        status: task.status,
        tags: None,
        agent_connected: None,
        agent: task.agent.clone(),
        review: task.review.as_ref().map(|r| r.progress()),
    };
    let mut ticker = tokio::time::interval(FRAME_INTERVAL);
    let mut last_refresh: Option<Instant> = None;
    let mut frame = 0usize;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        let refresh_due = started.elapsed() >= FIRST_LOOK
            && last_refresh.is_none_or(|t| t.elapsed() >= REFRESH_INTERVAL);
        // A running task only changes again by ending, which following notices.
        if refresh_due && state.status != TaskStatus::Running {
            last_refresh = Some(Instant::now());
            tokio::select! {
                _ = &mut stop => break,
                _ = refresh(&client, &task.target, &mut state) => {}
            }
            // Running: say so until the first output stops the spinner.
            if !waiting(state.status) && state.status != TaskStatus::Running {
                break;
            }
        }
        frame = (frame + 1) % FRAMES.len();
        let line = format!(
            "{} {}s {}",
            FRAMES[frame],
            started.elapsed().as_secs(),
            wait_message(&state)
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{}", fit(&line, stderr_width()));
        let _ = err.flush();
    }
    clear_line();
}

/// Why the task waits, when that is worth a line without a terminal: review, or no
/// agent that could take it. Plain waiting for a busy agent is not.
pub(crate) fn wait_reason(s: &WaitState) -> Option<String> {
    let id = s.task_id;
    match s.status {
        TaskStatus::PendingReview => Some(format!(
            "task {id} is waiting for review by the target's reviewers"
        )),
        _ if waiting(s.status) && s.agent_connected == Some(false) => {
            let line = wait_message(s);
            Some(format!("task {id} is waiting: {line}"))
        }
        _ => None,
    }
}

/// Without a terminal: writes each new reason for the wait once on stderr, until
/// the task runs or `stop` fires.
async fn explain_wait(client: Client, task: Task, mut stop: oneshot::Receiver<()>) {
    let mut state = WaitState {
        task_id: task.id,
        status: task.status,
        tags: None,
        agent_connected: None,
        agent: task.agent.clone(),
        review: task.review.as_ref().map(|r| r.progress()),
    };
    let mut said: Vec<String> = Vec::new();
    if let Some(reason) = wait_reason(&state) {
        crate::output::note(&reason);
        said.push(reason);
    }
    tokio::select! {
        _ = &mut stop => return,
        _ = tokio::time::sleep(FIRST_LOOK) => {}
    }
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = refresh(&client, &task.target, &mut state) => {}
        }
        if !waiting(state.status) {
            return;
        }
        if let Some(reason) = wait_reason(&state)
            && !said.contains(&reason)
        {
            crate::output::note(&reason);
            said.push(reason);
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
        }
    }
}

/// Updates the state from the server; failures leave it as it was (the spinner is
/// only decoration, following the task reports real errors).
async fn refresh(client: &Client, target: &str, state: &mut WaitState) {
    if let Ok(t) = client.get_task(state.task_id).await {
        state.status = t.status;
        state.agent = t.agent;
        state.review = t.review.map(|r| r.progress());
    }
    if state.tags.is_none()
        && let Ok(t) = client.get_target(target).await
    {
        state.tags = Some(t.tags);
    }
    if let Some(tags) = &state.tags
        && let Ok(agents) = client.list_agents().await
    {
        let want = norm_tags(tags.as_deref());
        state.agent_connected = Some(agents.iter().any(|a| norm_tags(a.tags.as_deref()) == want));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: TaskStatus) -> WaitState {
        WaitState {
            task_id: 4,
            status,
            tags: Some(Some("prod".into())),
            agent_connected: None,
            agent: None,
            review: None,
        }
    }

    #[test]
    fn spinner_lines_fit_the_terminal() {
        assert_eq!(fit("short", 80), "short");
        let cut = fit(&"x".repeat(100), 40);
        assert_eq!(cut.chars().count(), 39);
        assert!(cut.ends_with('…'));
        assert_eq!(fit("abc", 0), "…");
    }

    #[test]
    fn without_a_terminal_only_review_and_missing_agents_are_explained() {
        let mut s = state(TaskStatus::Ready);
        assert_eq!(wait_reason(&s), None);
        s.agent_connected = Some(true);
        assert_eq!(wait_reason(&s), None);
        s.agent_connected = Some(false);
        assert_eq!(
            wait_reason(&s).unwrap(),
            "task 4 is waiting: no agent with tags `prod` is connected; start one: TAGS=prod runops agent"
        );
        assert!(
            wait_reason(&state(TaskStatus::PendingReview))
                .unwrap()
                .starts_with("task 4 is waiting for review")
        );
        assert_eq!(wait_reason(&state(TaskStatus::Running)), None);
        assert_eq!(
            wait_message(&state(TaskStatus::Running)),
            "task 4 is running…"
        );
    }

    #[test]
    fn messages_say_what_the_task_waits_for() {
        assert_eq!(
            wait_message(&state(TaskStatus::Ready)),
            "waiting for an agent with tags `prod`…"
        );
        let mut s = state(TaskStatus::Ready);
        s.agent_connected = Some(false);
        assert_eq!(
            wait_message(&s),
            "no agent with tags `prod` is connected; start one: TAGS=prod runops agent"
        );
        s.tags = Some(None);
        assert_eq!(
            wait_message(&s),
            "no agent without tags is connected; start one: runops agent"
        );
        s.agent_connected = Some(true);
        assert_eq!(wait_message(&s), "waiting for an agent without tags…");
        assert_eq!(
            wait_message(&state(TaskStatus::PendingReview)),
            "task 4 is waiting for review…"
        );
        let mut d = state(TaskStatus::Dispatched);
        d.agent = Some("host-1".into());
        assert_eq!(
            wait_message(&d),
            "task 4 was handed to agent host-1, starting…"
        );
    }
}
