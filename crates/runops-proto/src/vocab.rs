//! The fixed vocabularies of a target and a user: integration types, secret providers,
//! redaction and review modes, roles. Each is an enum whose [`as_str`](TargetType::as_str)
//! is the exact name used on the wire, in the database and on the command line; every
//! such string in the code comes from here.
//!
//! Every enum has `ALL` (in the order the docs list them), `NAMES`, `as_str`, `Display`,
//! serde as its name, and a `FromStr` that takes exact names only and, for anything
//! else, answers an [`UnknownName`] naming the value, the valid ones and the closest
//! (`postgress` → did you mean `postgres`?).
//!
//! The request and answer structs of [`crate::api`] and [`crate::agent`] keep these
//! fields as text on purpose: a peer of another version may send a name this one does
//! not know, and that must become a clear refusal (the server's validation, the agent's
//! `invalid-config` failure of one task), not a body that fails to decode. The server
//! parses them with `FromStr` when it validates a target; the agent's runner and
//! secret-provider registries are built by exhaustive `match`es over these enums.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A name that is not one of a vocabulary's: says which vocabulary, what was given,
/// what is valid and, for a near miss, the one probably meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// What the name is of (`target type`, `secret provider`, ...).
    pub what: &'static str,
    /// The name as given.
    pub value: String,
    /// Every valid name.
    pub valid: &'static [&'static str],
    /// The valid name a mistyped one most likely meant.
    pub suggestion: Option<&'static str>,
}

impl UnknownName {
    pub fn new(what: &'static str, value: &str, valid: &'static [&'static str]) -> UnknownName {
        UnknownName {
            what,
            value: value.to_string(),
            valid,
            suggestion: closest(value, valid),
        }
    }
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Echo at most a line's worth of what was sent, without control characters.
        let shown: String = self
            .value
            .chars()
            .take(64)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        if self.value.trim().is_empty() {
            write!(f, "the {} is empty", self.what)?;
        } else {
            write!(f, "unknown {} `{shown}`", self.what)?;
            if let Some(s) = self.suggestion {
                write!(f, " (did you mean `{s}`?)")?;
            }
        }
        write!(f, "; use one of: {}", self.valid.join(", "))
    }
}

impl std::error::Error for UnknownName {}

/// The name of `valid` a mistyped `typed` most likely meant: a few edits away (case,
/// `_` for `-` and up to a third of the letters), or else sharing its first four
/// letters (`pending` → `pending-review`). `None` when nothing is close.
pub fn closest(typed: &str, valid: &[&'static str]) -> Option<&'static str> {
    let typed = typed.trim().to_ascii_lowercase().replace('_', "-");
    if typed.is_empty() {
        return None;
    }
    let norm = |name: &str| name.replace('_', "-");
    let max_edits = (typed.chars().count() / 3).max(2);
    let by_edits = valid
        .iter()
        .map(|name| (edit_distance(&typed, &norm(name)), *name))
        .filter(|(d, _)| *d <= max_edits)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name);
    by_edits.or_else(|| {
        let head: String = typed.chars().take(4).collect();
        (head.chars().count() == 4)
            .then(|| {
                valid
                    .iter()
                    .find(|name| norm(name).starts_with(&head))
                    .copied()
            })
            .flatten()
    })
}

/// Levenshtein distance, for suggestions between short names.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Defines a vocabulary enum: variants with their names, `ALL`, `NAMES`, `as_str`,
/// `Display`, `FromStr` (with [`UnknownName`]) and serde as the name.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order the docs list them.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];
            /// Every name, in the order of [`Self::ALL`].
            pub const NAMES: &'static [&'static str] = &[ $( $wire, )+ ];

            /// The name on the wire, in the database and on the command line.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            /// Exact names only.
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $( $wire => Ok($name::$variant), )+
                    _ => Err(UnknownName::new($what, s, $name::NAMES)),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary! {
    /// A target's integration type (`type`): which runner of the agent runs its tasks.
    pub enum TargetType("target type") {
        Bash = "bash",
        Python = "python",
        Node = "node",
        Elixir = "elixir",
        Postgres = "postgres",
        PostgresCsv = "postgres-csv",
        Mysql = "mysql",
        MysqlCsv = "mysql-csv",
        SqlServer = "sql-server",
        Mongodb = "mongodb",
        K8s = "k8s",
        K8sApply = "k8s-apply",
        K8sExec = "k8s-exec",
        RailsConsoleK8s = "rails-console-k8s",
        HashicorpVault = "hashicorp-vault",
        Rails = "rails",
        RailsConsole = "rails-console",
        RailsConsoleEcs = "rails-console-ecs",
        EcsExec = "ecs-exec",
        Heroku = "heroku",
        /// Runs the target's `custom_command` (which any type may also set).
        CustomCommand = "custom_command",
    }
}

impl TargetType {
    /// The types that need the same secrets and give a task the same power as this
    /// one (itself included): a task may override its target's type only within the
    /// family, or a user could, say, run `bash` with a database's password in its
    /// environment.
    pub fn family(self) -> &'static [TargetType] {
        use TargetType::*;
        match self {
            Bash | Python | Node | Elixir => &[Bash, Python, Node, Elixir],
            Postgres | PostgresCsv => &[Postgres, PostgresCsv],
            Mysql | MysqlCsv => &[Mysql, MysqlCsv],
            K8s | K8sApply | K8sExec | RailsConsoleK8s => {
                &[K8s, K8sApply, K8sExec, RailsConsoleK8s]
            }
            Rails | RailsConsole => &[Rails, RailsConsole],
            RailsConsoleEcs | EcsExec => &[RailsConsoleEcs, EcsExec],
            SqlServer => &[SqlServer],
            Mongodb => &[Mongodb],
            HashicorpVault => &[HashicorpVault],
            Heroku => &[Heroku],
            CustomCommand => &[CustomCommand],
        }
    }
}

impl TargetType {
    /// Types whose runner connects to a database with credentials from the target's
    /// secrets: a target of one without any secret source cannot run.
    pub fn connects_to_database(self) -> bool {
        use TargetType::*;
        match self {
            Postgres | PostgresCsv | Mysql | MysqlCsv | SqlServer | Mongodb => true,
            Bash | Python | Node | Elixir | K8s | K8sApply | K8sExec | RailsConsoleK8s
            | HashicorpVault | Rails | RailsConsole | RailsConsoleEcs | EcsExec | Heroku
            | CustomCommand => false,
        }
    }
}

vocabulary! {
    /// Where the agent reads a target's secrets (`secret_provider`).
    pub enum SecretProvider("secret provider") {
        /// An environment variable of the agent holding a JSON object (the default
        /// when a target has a `secret_path` and no provider).
        EnvVar = "env-var",
        /// A file under the agent's secrets directory.
        Filesystem = "filesystem",
        /// AWS Secrets Manager.
        Aws = "aws",
        /// HashiCorp Vault's KV engine.
        HashicorpKv = "hashicorp/kv",
        /// HashiCorp Vault's database engine (dynamic credentials).
        HashicorpDb = "hashicorp/db",
        /// The target's write-only config kept (encrypted) by the control plane.
        Runops = "runops",
    }
}

impl SecretProvider {
    /// The provider of a target that names a `secret_path` but no provider.
    pub const DEFAULT: SecretProvider = SecretProvider::EnvVar;
}

vocabulary! {
    /// What the agent removes from a task's output (`redact`).
    pub enum RedactMode("redact mode") {
        /// Secrets and personal data (the default).
        All = "all",
        /// Secrets only.
        None = "none",
    }
}

impl RedactMode {
    pub const DEFAULT: RedactMode = RedactMode::All;
}

vocabulary! {
    /// Who must approve a target's tasks before they run (`review`).
    pub enum ReviewMode("review mode") {
        /// Nobody: tasks run at once (the default).
        None = "none",
        /// Any other user of the organisation (`min_approvals` of them).
        Anyone = "anyone",
        /// The reviewer groups (`min_approvals` of them, default all).
        Team = "team",
    }
}

impl ReviewMode {
    pub const DEFAULT: ReviewMode = ReviewMode::None;

    /// The mode of a stored or sent name, `None` when it is none of them.
    pub fn parse(s: &str) -> Option<ReviewMode> {
        s.parse().ok()
    }
}

vocabulary! {
    /// A user's role in their organisation.
    pub enum Role("role") {
        /// Manages users, targets and tokens; may force approvals.
        Admin = "admin",
        /// Runs tasks and reviews those of others (the default).
        User = "user",
    }
}

impl Role {
    pub const DEFAULT: Role = Role::User;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr + Serialize,
        T: for<'de> Deserialize<'de>,
        <T as FromStr>::Err: fmt::Debug,
    {
        for v in all {
            let name = v.to_string();
            assert_eq!(name.parse::<T>().unwrap(), *v);
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), *v);
        }
    }

    #[test]
    fn every_name_round_trips_through_display_from_str_and_serde() {
        round_trips(TargetType::ALL);
        round_trips(SecretProvider::ALL);
        round_trips(RedactMode::ALL);
        round_trips(ReviewMode::ALL);
        round_trips(Role::ALL);
        assert_eq!(TargetType::ALL.len(), TargetType::NAMES.len());
    }

    /// The names are the wire format and the database values: they never change.
    #[test]
    fn names_are_the_documented_ones() {
        assert_eq!(
            TargetType::NAMES.join(","),
            "bash,python,node,elixir,postgres,postgres-csv,mysql,mysql-csv,sql-server,mongodb,k8s,k8s-apply,k8s-exec,rails-console-k8s,hashicorp-vault,rails,rails-console,rails-console-ecs,ecs-exec,heroku,custom_command"
        );
        assert_eq!(
            SecretProvider::NAMES.join(","),
            "env-var,filesystem,aws,hashicorp/kv,hashicorp/db,runops"
        );
        assert_eq!(RedactMode::NAMES.join(","), "all,none");
        assert_eq!(ReviewMode::NAMES.join(","), "none,anyone,team");
        assert_eq!(Role::NAMES.join(","), "admin,user");
    }

    #[test]
    fn unknown_names_are_named_with_the_valid_ones_and_the_closest() {
        let e = "postgress".parse::<TargetType>().unwrap_err();
        assert_eq!(e.suggestion, Some("postgres"));
        let text = e.to_string();
        assert!(
            text.starts_with(
                "unknown target type `postgress` (did you mean `postgres`?); use one of: bash, python,"
            ),
            "{text}"
        );
        assert_eq!(
            "custom-command"
                .parse::<TargetType>()
                .unwrap_err()
                .suggestion,
            Some("custom_command")
        );
        assert_eq!(
            "hashicorp/kv2"
                .parse::<SecretProvider>()
                .unwrap_err()
                .suggestion,
            Some("hashicorp/kv")
        );
        assert_eq!(
            "Admin".parse::<Role>().unwrap_err().suggestion,
            Some("admin")
        );
        let e = "cobol".parse::<TargetType>().unwrap_err();
        assert_eq!(e.suggestion, None);
        assert!(
            e.to_string()
                .starts_with("unknown target type `cobol`; use one of: bash")
        );
        let e = "".parse::<ReviewMode>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "the review mode is empty; use one of: none, anyone, team"
        );
        let e = serde_json::from_str::<RedactMode>("\"some\"").unwrap_err();
        assert!(e.to_string().contains("unknown redact mode `some`"), "{e}");
    }

    #[test]
    fn a_family_holds_its_own_type_and_is_the_family_of_each_member() {
        for t in TargetType::ALL {
            assert!(t.family().contains(t), "{t}");
            for m in t.family() {
                assert_eq!(m.family(), t.family(), "{t} and {m}");
            }
        }
    }
}
