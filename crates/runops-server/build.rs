// `sqlx::migrate!` embeds `migrations/` (SQLite) and `migrations_postgres/` at compile
// time; a new migration file must rebuild the crate (edits to existing files are tracked
// through `include_str!`).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations_postgres");
}
