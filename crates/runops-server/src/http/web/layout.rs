//! The frame of every page (head, navigation, sign-out), the embedded script and style,
//! and small formatting helpers. maud escapes every interpolated value.

use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use runops_proto::TaskStatus;

use super::session::{WebUser, csrf_field};
use crate::error::ApiError;

/// The one script of the web app (live logs, live lists, status watch, tab key in the
/// script editor). Served from this origin only: the CSP allows no inline script.
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Assets change only with the binary: a browser may keep them an hour.
const ASSET_CACHE: &str = "public, max-age=3600";

pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        APP_JS,
    )
}

pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        APP_CSS,
    )
}

/// Which entry of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Tasks,
    NewTask,
    Reviews,
    Targets,
    Agents,
    Users,
    Tokens,
    Audit,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Runops" }
            link rel="stylesheet" href="/assets/app.css";
            script src="/assets/app.js" defer {}
        }
    }
}

/// A page of a signed-in user.
pub fn page(title: &str, user: &WebUser, nav: Nav, body: Markup) -> Markup {
    let item = |n: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(n == nav).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/tasks" { "Runops" }
                    nav aria-label="Main" {
                        ul {
                            (item(Nav::Tasks, "/tasks", "Tasks"))
                            (item(Nav::NewTask, "/tasks/new", "New task"))
                            (item(Nav::Reviews, "/reviews", "Reviews"))
                            (item(Nav::Targets, "/targets", "Targets"))
                            (item(Nav::Agents, "/agents", "Agents"))
                            (item(Nav::Tokens, "/tokens", "API tokens"))
                            @if user.is_admin() {
                                (item(Nav::Users, "/users", "Users"))
                                (item(Nav::Audit, "/audit", "Audit"))
                            }
                        }
                    }
                    form method="post" action="/sign-out" class="signout" {
                        (csrf_field(user))
                        span class="who" { (user.email()) }
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// A page without navigation (sign-in, errors before sign-in).
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { main id="main" class="narrow" { (body) } }
        }
    }
}

/// The API's message and hint, as a page.
pub fn error_page(title: &str, e: &ApiError) -> Markup {
    bare_page(
        title,
        html! {
            h1 { (title) }
            (error_box(e))
            p { a href="/tasks" { "Back to the tasks" } }
        },
    )
}

/// The API's message and hint in a box (forms show it above their fields).
pub fn error_box(e: &ApiError) -> Markup {
    html! {
        div class="error" role="alert" {
            p { strong { "Error: " } (e.error) }
            @if let Some(h) = &e.hint { p class="hint" { "Hint: " (h) } }
        }
    }
}

pub fn time(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

pub fn time_opt(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { "—" },
    }
}

/// `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn elapsed(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "—".into();
    };
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

pub fn status(s: TaskStatus) -> Markup {
    html! { span class={ "status s-" (s.as_str()) } { (s.as_str()) } }
}

/// The first non-empty line of a script, cut to `max` characters.
pub fn first_line(script: &str, max: usize) -> String {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() > max {
        let mut s: String = line.chars().take(max).collect();
        s.push('…');
        s
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_reads_naturally() {
        assert_eq!(elapsed(None), "—");
        assert_eq!(elapsed(Some(850)), "850 ms");
        assert_eq!(elapsed(Some(12_340)), "12.3 s");
        assert_eq!(elapsed(Some(245_000)), "4 min 05 s");
        assert_eq!(elapsed(Some(7_380_000)), "2 h 03 min");
    }

    #[test]
    fn first_line_skips_blank_lines_and_cuts() {
        assert_eq!(first_line("\n\n  select 1;\nselect 2", 80), "select 1;");
        assert_eq!(first_line("abcdef", 3), "abc…");
        assert_eq!(first_line("", 3), "");
    }

    #[test]
    fn markup_escapes_what_it_shows() {
        let e = ApiError::bad_request("<script>alert(1)</script>");
        let html = error_box(&e).into_string();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    }
}
