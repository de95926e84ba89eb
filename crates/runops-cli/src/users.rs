//! `runops users create|list`.

use crate::error::CliResult;
use crate::output::{self, cell};
use chrono::Utc;
use runops_proto::api::{User, UserCreate};

#[derive(clap::Args, Debug)]
pub struct UsersCmd {
    #[command(subcommand)]
    pub cmd: UsersSub,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true, display_order = 900)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum UsersSub {
    /// Create a user (admins only); prints their API token once.
    Create(UserCreateArgs),
    /// List the organisation's users.
    #[command(visible_alias = "ls")]
    List,
}

#[derive(clap::Args, Debug)]
pub struct UserCreateArgs {
    /// Full name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// E-mail address (their identity in tasks and reviews).
    #[arg(long, value_name = "EMAIL")]
    pub email: String,
    /// Groups, comma-separated (used by `--review team` reviewers).
    #[arg(long, value_name = "GROUPS", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// `user` (default) or `admin`.
    #[arg(long, value_name = "ROLE", value_parser = clap::builder::PossibleValuesParser::new(runops_proto::Role::NAMES))]
    pub role: Option<String>,
}

impl UserCreateArgs {
    pub(crate) fn to_request(&self) -> UserCreate {
        UserCreate {
            name: self.name.clone(),
            email: self.email.clone(),
            groups: self
                .groups
                .iter()
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect(),
            role: self.role.clone(),
        }
    }
}

impl UsersCmd {
    pub async fn run(self) -> CliResult<u8> {
        let json = self.json;
        let client = crate::connect()?;
        match self.cmd {
            UsersSub::Create(args) => {
                let created = client.create_user(&args.to_request()).await?;
                if json {
                    output::print_json(&created)?;
                } else {
                    output::print(&users_table(std::slice::from_ref(&created.user)))?;
                    output::print(&format!("\ntoken: {}\n", created.token))?;
                    output::note(
                        "the token is shown only this once; they log in with \
                         `runops login --url URL --token TOKEN`",
                    );
                }
            }
            UsersSub::List => {
                let users = client.list_users().await?;
                if json {
                    output::print_json(&users)?;
                } else {
                    output::print(&users_table(&users))?;
                }
            }
        }
        Ok(0)
    }
}

pub(crate) fn users_table(users: &[User]) -> String {
    let now = Utc::now();
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.id.to_string(),
                cell(&u.email),
                cell(&u.name),
                cell(&u.role),
                if u.groups.is_empty() {
                    "-".to_string()
                } else {
                    cell(&u.groups.join(","))
                },
                output::ago(u.created_at, now),
            ]
        })
        .collect();
    output::table(&["ID", "EMAIL", "NAME", "ROLE", "GROUPS", "CREATED"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::tests::{parse, parse_err};

    fn users(args: &[&str]) -> UsersCmd {
        let mut full = vec!["users"];
        full.extend_from_slice(args);
        match parse(&full) {
            Command::Users(u) => u,
            other => panic!("not users: {other:?}"),
        }
    }

    #[test]
    fn original_users_create_line_parses() {
        // runops users create --name --email --groups
        let UsersSub::Create(c) = users(&[
            "create",
            "--name",
            "Ana Lima",
            "--email",
            "ana@example.com",
            "--groups",
            "dba, sre",
        ])
        .cmd
        else {
            panic!("not create")
        };
        let req = c.to_request();
        assert_eq!(req.name, "Ana Lima");
        assert_eq!(req.email, "ana@example.com");
        assert_eq!(req.groups, vec!["dba".to_string(), "sre".to_string()]);
        assert_eq!(req.role, None);
    }

    #[test]
    fn role_is_checked_and_list_parses() {
        let UsersSub::Create(c) = users(&[
            "create", "--name", "A", "--email", "a@b.c", "--role", "admin",
        ])
        .cmd
        else {
            panic!("not create")
        };
        assert_eq!(c.to_request().role.as_deref(), Some("admin"));
        assert!(c.to_request().groups.is_empty());
        assert!(
            parse_err(&[
                "users", "create", "--name", "A", "--email", "a@b.c", "--role", "root"
            ])
            .contains("admin")
        );
        assert!(matches!(users(&["list"]).cmd, UsersSub::List));
    }
}
