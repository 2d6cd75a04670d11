//! The image importer: an uploaded tar, tar.gz or `docker save` archive is
//! inspected under small limits; anything goes in, a typed answer comes out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimhost_runtime::mcm::tar_image::{inspect, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_unpacked: 4 << 20,
        max_entries: 512,
    };
    if let Ok(image) = inspect(data, limits) {
        assert!(image.size() <= limits.max_unpacked);
    }
});
