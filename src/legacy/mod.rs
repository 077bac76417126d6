//! What old GoTo integrations send ([`params`]), the v2 call it becomes ([`grant`]), and the
//! legacy answer they get back ([`render`]).

mod form;
mod grant;
mod params;
mod render;

pub use form::{check_form, parse_basic};
pub use grant::{Grant, V2Request, to_v2, with_client_credentials};
pub use params::{BodyKind, LegacyParams, all_pairs, collect};
pub use render::render_minted;
