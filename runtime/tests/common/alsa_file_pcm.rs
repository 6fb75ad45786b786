//! ALSA's file PCM as a capture device for `hark listen` (shared by the runtime's capture and
//! sink tests and the end-to-end test in `tests/`, which includes this file by path).

use std::path::{Path, PathBuf};

/// Writes `samples` as raw little-endian f32 to `dir/NAME.raw` and an ALSA configuration
/// `dir/NAME.asound.conf` whose default PCM reads them as a capture device (bit-exact,
/// unpaced; digital silence follows the end of the file). Returns the configuration's path,
/// for `ALSA_CONFIG_PATH` (which replaces alsa.conf entirely, hence the inline null slave).
pub fn alsa_file_pcm(dir: &Path, name: &str, samples: &[f32]) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    std::fs::write(
        &raw,
        samples
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let asound = dir.join(format!("{name}.asound.conf"));
    std::fs::write(
        &asound,
        format!(
            "pcm.!default {{\n type file\n slave.pcm {{ type null }}\n file \"/dev/null\"\n infile \"{}\"\n format \"raw\"\n}}\n",
            raw.display()
        ),
    )
    .unwrap();
    asound
}
