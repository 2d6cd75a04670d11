//! Several nodes on one Redis behaving as one host (`--cluster`, SPEC 8).

pub mod deploys;
