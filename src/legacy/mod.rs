//! What old GoTo integrations send and expect: parameter collection for `/oauth/access_token`.
//! (The legacy answer shape is rendered by `translate`.)

mod params;

pub use params::{BodyKind, LegacyParams, all_pairs, check_form, collect};
