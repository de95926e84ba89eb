//! Agent token parsing: never panics on any text; a token made for a server URL gives
//! that URL back (without a trailing `/`).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runops_proto::token::{TokenKind, agent_token_server_url, format_agent_token, token_kind};

#[derive(Debug, Arbitrary)]
struct Input {
    token: String,
    url: String,
    secret: [u8; 32],
}

fuzz_target!(|input: Input| {
    let _ = token_kind(&input.token);
    if let Err(e) = agent_token_server_url(&input.token) {
        assert!(!e.is_empty());
    }
    let t = format_agent_token(&input.url, &input.secret);
    assert_eq!(token_kind(&t), Some(TokenKind::Agent));
    assert_eq!(
        agent_token_server_url(&t).as_deref(),
        Ok(input.url.trim_end_matches('/'))
    );
});
