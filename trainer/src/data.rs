//! Datasets: lists of `(path, class, group)` items from a manifest, a folder per class,
//! ESC-50 or UrbanSound8K; a class map that renames, merges or drops classes; a split by group;
//! decoding into in-memory clips (through the runtime's decoder), skipping what does not decode.
//!
//! The *group* of an item is what must not straddle a train/validation split: the source
//! package of a manifest, the fold of ESC-50 and UrbanSound8K, the class folder otherwise (or
//! the item itself where nothing better is known).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kmeans::SplitMix64;

/// The name of the background class everywhere.
pub const BACKGROUND: &str = "background";

/// Why a dataset cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A table lacks a column it needs.
    #[error("{path}: no column {column:?} in the header")]
    MissingColumn {
        /// The table.
        path: PathBuf,
        /// The column.
        column: String,
    },
    /// A row of a table is malformed.
    #[error("{path}:{line}: {problem}")]
    Row {
        /// The table.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The dataset has no items.
    #[error("{0}: no audio items found")]
    Empty(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One audio file of a dataset, before the class map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The audio file.
    pub path: PathBuf,
    /// Its class in the source dataset.
    pub class: String,
    /// The group it belongs to (package, fold, ...), for held-out splits.
    pub group: String,
}

/// What an item is for, after the class map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An event of a target class, mixed into backgrounds and labelled with its class.
    Event,
    /// Ambient background: windows of it are the `background` class.
    Background,
    /// A hard negative: an event-like sound mixed into backgrounds, labelled `background`.
    Negative,
}

/// An item after the class map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabeledItem {
    /// The audio file.
    pub path: PathBuf,
    /// Target class (an event class, or [`BACKGROUND`] for backgrounds and hard negatives).
    pub class: String,
    /// Its role.
    pub role: Role,
    /// The source class before the class map.
    pub source_class: String,
    /// Its group.
    pub group: String,
}

/// Where a dataset comes from (the `[[data.sources]]` entries of a training configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A TSV manifest with a header holding `file` and `class` (and optionally `package`,
    /// taken as the group); paths relative to the manifest's folder.
    Manifest {
        /// The manifest.
        path: PathBuf,
    },
    /// A folder with one subfolder per class; the class folder is the group.
    Folders {
        /// The folder.
        path: PathBuf,
    },
    /// ESC-50 (`meta/esc50.csv`, audio in `audio/`); the fold is the group.
    Esc50 {
        /// The dataset's root folder.
        path: PathBuf,
    },
    /// UrbanSound8K (`metadata/UrbanSound8K.csv`, audio in `audio/foldN/`); the fold is the
    /// group.
    UrbanSound8k {
        /// The dataset's root folder.
        path: PathBuf,
    },
}

impl Source {
    /// Lists the items; relative paths in the source are resolved against `base`.
    pub fn items(&self, base: &Path) -> Result<Vec<Item>, DataError> {
        let at = |p: &Path| base.join(p);
        match self {
            Source::Manifest { path } => from_manifest(&at(path)),
            Source::Folders { path } => from_folders(&at(path)),
            Source::Esc50 { path } => from_esc50(&at(path)),
            Source::UrbanSound8k { path } => from_urbansound8k(&at(path)),
        }
    }
}

/// Splits one line of a delimited table, honouring double quotes (`""` inside quotes is one
/// quote).
pub fn split_fields(line: &str, delim: char) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        if quoted {
            if ch == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(ch);
            }
        } else if ch == '"' {
            quoted = true;
        } else if ch == delim {
            fields.push(std::mem::take(&mut cur));
        } else {
            cur.push(ch);
        }
    }
    fields.push(cur);
    fields
}

/// A delimited table: its header and rows (with 1-based line numbers), blank lines skipped.
struct Table {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    fn read(path: &Path, delim: char) -> Result<Self, DataError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let header = match lines.next() {
            Some((_, l)) => split_fields(l.trim_start_matches('\u{feff}'), delim),
            None => return Err(DataError::Empty(path.to_path_buf())),
        };
        let header = header.into_iter().map(|h| h.trim().to_string()).collect();
        let rows = lines
            .map(|(i, l)| (i + 1, split_fields(l.trim_end_matches('\r'), delim)))
            .collect();
        Ok(Table {
            path: path.to_path_buf(),
            header,
            rows,
        })
    }

    fn column(&self, name: &str) -> Result<usize, DataError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::MissingColumn {
                path: self.path.clone(),
                column: name.into(),
            })
    }

    fn get<'a>(&self, line: usize, row: &'a [String], col: usize) -> Result<&'a str, DataError> {
        row.get(col)
            .map(|s| s.trim())
            .ok_or_else(|| DataError::Row {
                path: self.path.clone(),
                line,
                problem: format!("{} fields, expected at least {}", row.len(), col + 1),
            })
    }
}

fn non_empty(items: Vec<Item>, path: &Path) -> Result<Vec<Item>, DataError> {
    if items.is_empty() {
        Err(DataError::Empty(path.to_path_buf()))
    } else {
        Ok(items)
    }
}

/// Items of a TSV manifest (header with `file` and `class`; `package`, when present, is the
/// group, otherwise the class is). Paths are relative to the manifest's folder.
pub fn from_manifest(path: &Path) -> Result<Vec<Item>, DataError> {
    let t = Table::read(path, '\t')?;
    let (fc, cc) = (t.column("file")?, t.column("class")?);
    let pc = t.column("package").ok();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut items = Vec::new();
    for (line, row) in &t.rows {
        let class = t.get(*line, row, cc)?.to_string();
        let group = match pc {
            Some(pc) => t.get(*line, row, pc)?.to_string(),
            None => class.clone(),
        };
        items.push(Item {
            path: dir.join(t.get(*line, row, fc)?),
            class,
            group,
        });
    }
    non_empty(items, path)
}

/// Whether a file name looks like audio hark decodes.
fn is_audio(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("wav" | "flac" | "ogg" | "mp3")
    )
}

/// Items of a folder with one subfolder per class (audio files directly in each subfolder,
/// sorted by name); the class is the group.
pub fn from_folders(path: &Path) -> Result<Vec<Item>, DataError> {
    let mut classes: Vec<PathBuf> = fs::read_dir(path)
        .map_err(io_err(path))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let mut items = Vec::new();
    for dir in classes {
        let class = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_audio(p))
            .collect();
        files.sort();
        items.extend(files.into_iter().map(|p| Item {
            path: p,
            class: class.clone(),
            group: class.clone(),
        }));
    }
    non_empty(items, path)
}

/// Items of ESC-50: `meta/esc50.csv` (filename, fold, target, category, ...), audio in
/// `audio/`; the group is `fold<N>`.
pub fn from_esc50(root: &Path) -> Result<Vec<Item>, DataError> {
    let meta = root.join("meta").join("esc50.csv");
    let t = Table::read(&meta, ',')?;
    let (fc, fold, cat) = (
        t.column("filename")?,
        t.column("fold")?,
        t.column("category")?,
    );
    let mut items = Vec::new();
    for (line, row) in &t.rows {
        items.push(Item {
            path: root.join("audio").join(t.get(*line, row, fc)?),
            class: t.get(*line, row, cat)?.to_string(),
            group: format!("fold{}", t.get(*line, row, fold)?),
        });
    }
    non_empty(items, &meta)
}

/// Items of UrbanSound8K: `metadata/UrbanSound8K.csv` (slice_file_name, fsID, start, end,
/// salience, fold, classID, class), audio in `audio/fold<N>/`; the group is `fold<N>`.
pub fn from_urbansound8k(root: &Path) -> Result<Vec<Item>, DataError> {
    let meta = root.join("metadata").join("UrbanSound8K.csv");
    let t = Table::read(&meta, ',')?;
    let (fc, fold, cc) = (
        t.column("slice_file_name")?,
        t.column("fold")?,
        t.column("class")?,
    );
    let mut items = Vec::new();
    for (line, row) in &t.rows {
        let fold = format!("fold{}", t.get(*line, row, fold)?);
        items.push(Item {
            path: root.join("audio").join(&fold).join(t.get(*line, row, fc)?),
            class: t.get(*line, row, cc)?.to_string(),
            group: fold,
        });
    }
    non_empty(items, &meta)
}

/// Source class → target. Targets are a class name, `"background"` (ambient background),
/// `"negative"` (hard negative, labelled background) or `"drop"`; classes not in `map` get
/// `default` (`"drop"` unless set; `"keep"` keeps the source class name as the target class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassMap {
    /// Source class → target. Default empty.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Target of unmapped classes. Default `"keep"`.
    #[serde(default = "ClassMap::default_target")]
    pub default: String,
}

impl Default for ClassMap {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            default: Self::default_target(),
        }
    }
}

impl ClassMap {
    fn default_target() -> String {
        "keep".into()
    }

    /// The target of a source class, `None` when it is dropped.
    pub fn target(&self, class: &str) -> Option<(String, Role)> {
        let t = self.map.get(class).unwrap_or(&self.default);
        match t.as_str() {
            "drop" => None,
            "keep" => Some((class.to_string(), Role::Event)),
            BACKGROUND => Some((BACKGROUND.into(), Role::Background)),
            "negative" => Some((BACKGROUND.into(), Role::Negative)),
            other => Some((other.to_string(), Role::Event)),
        }
    }

    /// Applies the map; dropped items disappear.
    pub fn apply(&self, items: &[Item]) -> Vec<LabeledItem> {
        items
            .iter()
            .filter_map(|it| {
                self.target(&it.class).map(|(class, role)| LabeledItem {
                    path: it.path.clone(),
                    class,
                    role,
                    source_class: it.class.clone(),
                    group: it.group.clone(),
                })
            })
            .collect()
    }
}

/// How items are split into training and validation sets, by group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Fraction of the groups (by a hash of the group name and `seed`) held out for validation
    /// when `val_groups` is empty. Default 0.2.
    #[serde(default = "SplitConfig::default_fraction")]
    pub val_fraction: f64,
    /// Groups held out for validation, by name; overrides `val_fraction`. Default none.
    #[serde(default)]
    pub val_groups: Vec<String>,
    /// Seed of the hash. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Groups held out for testing (`hark-train mixtures --split test`): their clips are
    /// never used for training or validation. Default none.
    #[serde(default)]
    pub test_groups: Vec<String>,
    /// Fraction of the background clips of the other groups held out for testing too, chosen
    /// by a hash of the clip's name (backgrounds come from few packages, so whole packages
    /// cannot be spared). Default 0.
    #[serde(default)]
    pub test_background_fraction: f64,
    /// When set, background clips go to validation by a hash of their name with this
    /// probability instead of by group. Default none.
    #[serde(default)]
    pub val_background_fraction: Option<f64>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            val_fraction: Self::default_fraction(),
            val_groups: Vec::new(),
            seed: 0,
            test_groups: Vec::new(),
            test_background_fraction: 0.0,
            val_background_fraction: None,
        }
    }
}

impl SplitConfig {
    fn default_fraction() -> f64 {
        0.2
    }

    /// Whether a group goes to validation. Deterministic: FNV-1a of the name, mixed with the
    /// seed, mapped to `[0, 1)` and compared with `val_fraction`.
    pub fn is_val(&self, group: &str) -> bool {
        if !self.val_groups.is_empty() {
            return self.val_groups.iter().any(|g| g == group);
        }
        let h = SplitMix64::new(fnv1a(group.as_bytes()) ^ self.seed).next_f64();
        h < self.val_fraction
    }

    /// Whether a clip is held out for testing: its group is a test group, or it is a
    /// background whose name hashes below `test_background_fraction`.
    pub fn is_test(&self, name: &str, group: &str, role: Role) -> bool {
        if self.test_groups.iter().any(|g| g == group) {
            return true;
        }
        role == Role::Background
            && self.test_background_fraction > 0.0
            && SplitMix64::new(fnv1a(name.as_bytes()) ^ self.seed ^ 0x7465_7374).next_f64()
                < self.test_background_fraction
    }

    /// Whether a clip goes to validation: backgrounds by a hash of their name when
    /// `val_background_fraction` is set (backgrounds come from few packages), everything
    /// else by [`SplitConfig::is_val`] of its group.
    pub fn is_val_clip(&self, name: &str, group: &str, role: Role) -> bool {
        match (role, self.val_background_fraction) {
            (Role::Background, Some(f)) => {
                SplitMix64::new(fnv1a(name.as_bytes()) ^ self.seed ^ 0x7661_6c62).next_f64() < f
            }
            _ => self.is_val(group),
        }
    }

    /// Splits clips into (train, validation) by [`SplitConfig::is_val_clip`].
    pub fn split_clips(&self, clips: &[Clip]) -> (Vec<Clip>, Vec<Clip>) {
        clips
            .iter()
            .cloned()
            .partition(|c| !self.is_val_clip(&c.name, &c.group, c.role))
    }

    /// Splits clips into (development, test) by [`SplitConfig::is_test`].
    pub fn split_test(&self, clips: &[Clip]) -> (Vec<Clip>, Vec<Clip>) {
        clips
            .iter()
            .cloned()
            .partition(|c| !self.is_test(&c.name, &c.group, c.role))
    }

    /// Splits items into (train, validation).
    pub fn split<T: Clone>(&self, items: &[T], group: impl Fn(&T) -> &str) -> (Vec<T>, Vec<T>) {
        items
            .iter()
            .cloned()
            .partition(|it| !self.is_val(group(it)))
    }
}

/// 64-bit FNV-1a hash.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A decoded clip in memory: mono samples at 16 kHz.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// A name for messages (the file path, or a synthetic name).
    pub name: String,
    /// Target class ([`BACKGROUND`] for backgrounds and hard negatives).
    pub class: String,
    /// Its role.
    pub role: Role,
    /// Its group.
    pub group: String,
    /// The source class it was listed under (before the class map), e.g. `bg_music`:
    /// backgrounds are drawn evenly over these kinds, so that a kind with many short files
    /// does not dominate.
    pub kind: String,
    /// Mono samples at 16 kHz.
    pub samples: Vec<f32>,
}

/// A clip that could not be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// The decoder's message.
    pub reason: String,
}

/// Decodes items with the runtime's decoder. A clip that fails to decode (or holds no
/// samples) is skipped and reported; `max_seconds` (when given) truncates long clips.
pub fn load_clips(items: &[LabeledItem], max_seconds: Option<f64>) -> (Vec<Clip>, Vec<Skipped>) {
    let mut clips = Vec::new();
    let mut skipped = Vec::new();
    for it in items {
        match hark::audio::read_file(&it.path) {
            Ok(d) if d.samples.is_empty() => skipped.push(Skipped {
                path: it.path.clone(),
                reason: "no samples".into(),
            }),
            Ok(mut d) => {
                if let Some(s) = max_seconds {
                    d.samples
                        .truncate((s * hark::audio::TARGET_RATE as f64) as usize);
                }
                clips.push(Clip {
                    name: it.path.display().to_string(),
                    class: it.class.clone(),
                    role: it.role,
                    group: it.group.clone(),
                    kind: it.source_class.clone(),
                    samples: d.samples,
                });
            }
            Err(e) => skipped.push(Skipped {
                path: it.path.clone(),
                reason: e.to_string(),
            }),
        }
    }
    (clips, skipped)
}

/// Writes mono 16-bit PCM WAV (for fixtures and exported mixtures).
pub fn write_wav(path: &Path, samples: &[f32], rate: u32) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    let data_len = (samples.len() * 2) as u32;
    f.write_all(b"RIFF")?;
    f.write_all(&(36 + data_len).to_le_bytes())?;
    f.write_all(b"WAVEfmt ")?;
    f.write_all(&16u32.to_le_bytes())?;
    f.write_all(&1u16.to_le_bytes())?; // PCM
    f.write_all(&1u16.to_le_bytes())?; // mono
    f.write_all(&rate.to_le_bytes())?;
    f.write_all(&(rate * 2).to_le_bytes())?;
    f.write_all(&2u16.to_le_bytes())?;
    f.write_all(&16u16.to_le_bytes())?;
    f.write_all(b"data")?;
    f.write_all(&data_len.to_le_bytes())?;
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, f: f32) -> Vec<f32> {
        (0..n)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * f * i as f32 / 16000.0).sin())
            .collect()
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn manifest_items_with_package_groups() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("sub/sources.tsv");
        write(
            &m,
            "file\tclass\tpackage\tseconds\na/x.wav\tdog_bark\tpkgA\t1.0\nb/y.flac\tbg_music\tpkgB\t2\n\n",
        );
        let items = from_manifest(&m).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].path, dir.path().join("sub/a/x.wav"));
        assert_eq!(
            (items[0].class.as_str(), items[0].group.as_str()),
            ("dog_bark", "pkgA")
        );
        assert_eq!(items[1].group, "pkgB");
        // Without a package column the class is the group; a missing column is an error.
        write(&m, "class\tfile\ndog\tz.wav\n");
        assert_eq!(from_manifest(&m).unwrap()[0].group, "dog");
        write(&m, "path\tclass\nz.wav\tdog\n");
        assert!(matches!(
            from_manifest(&m),
            Err(DataError::MissingColumn { column, .. }) if column == "file"
        ));
        write(&m, "file\tclass\tpackage\nz.wav\n");
        assert!(matches!(
            from_manifest(&m),
            Err(DataError::Row { line: 2, .. })
        ));
    }

    #[test]
    fn folders_esc50_and_urbansound8k() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("f/dog/1.wav"), "");
        write(&root.join("f/dog/notes.txt"), "");
        write(&root.join("f/cat/2.WAV"), "");
        let items = from_folders(&root.join("f")).unwrap();
        let got: Vec<(&str, &str)> = items
            .iter()
            .map(|i| (i.class.as_str(), i.group.as_str()))
            .collect();
        assert_eq!(got, vec![("cat", "cat"), ("dog", "dog")]);

        write(
            &root.join("esc/meta/esc50.csv"),
            "filename,fold,target,category,esc10,src_file,take\n1-100-A-0.wav,1,0,dog,True,100,A\n2-200-A-40.wav,2,40,\"helicopter\",False,200,A\n",
        );
        let items = from_esc50(&root.join("esc")).unwrap();
        assert_eq!(items[0].path, root.join("esc/audio/1-100-A-0.wav"));
        assert_eq!(
            (items[1].class.as_str(), items[1].group.as_str()),
            ("helicopter", "fold2")
        );

        write(
            &root.join("us/metadata/UrbanSound8K.csv"),
            "slice_file_name,fsID,start,end,salience,fold,classID,class\n100032-3-0-0.wav,100032,0.0,0.31,1,5,3,dog_bark\n",
        );
        let items = from_urbansound8k(&root.join("us")).unwrap();
        assert_eq!(items[0].path, root.join("us/audio/fold5/100032-3-0-0.wav"));
        assert_eq!(
            (items[0].class.as_str(), items[0].group.as_str()),
            ("dog_bark", "fold5")
        );
    }

    #[test]
    fn class_map_renames_merges_and_drops() {
        let mut map = BTreeMap::new();
        map.insert("dog_bark".into(), "dog".into());
        map.insert("dog_howl".into(), "dog".into());
        map.insert("bg_music".into(), "background".into());
        map.insert("neg_door".into(), "negative".into());
        map.insert("siren".into(), "drop".into());
        let cm = ClassMap {
            map,
            default: "drop".into(),
        };
        let it = |c: &str| Item {
            path: PathBuf::from(format!("{c}.wav")),
            class: c.into(),
            group: "g".into(),
        };
        let items: Vec<Item> = [
            "dog_bark", "dog_howl", "bg_music", "neg_door", "siren", "other",
        ]
        .iter()
        .map(|c| it(c))
        .collect();
        let out = cm.apply(&items);
        let got: Vec<(&str, Role)> = out.iter().map(|i| (i.class.as_str(), i.role)).collect();
        assert_eq!(
            got,
            vec![
                ("dog", Role::Event),
                ("dog", Role::Event),
                ("background", Role::Background),
                ("background", Role::Negative),
            ]
        );
        assert_eq!(out[1].source_class, "dog_howl");
        let keep = ClassMap::default();
        assert_eq!(keep.apply(&items).len(), 6);
        assert_eq!(keep.target("other"), Some(("other".into(), Role::Event)));
    }

    #[test]
    fn split_by_group_is_deterministic_and_keeps_groups_together() {
        let items: Vec<(String, usize)> = (0..200).map(|i| (format!("g{}", i % 20), i)).collect();
        let cfg = SplitConfig::default();
        let (tr, va) = cfg.split(&items, |x| &x.0);
        assert_eq!(tr.len() + va.len(), 200);
        assert!(!va.is_empty() && !tr.is_empty());
        for v in &va {
            assert!(tr.iter().all(|t| t.0 != v.0), "group {} on both sides", v.0);
        }
        assert_eq!(cfg.split(&items, |x| &x.0), (tr.clone(), va.clone()));
        let explicit = SplitConfig {
            val_groups: vec!["g3".into()],
            ..Default::default()
        };
        let (_, va) = explicit.split(&items, |x| &x.0);
        assert_eq!(va.len(), 10);
        assert!(va.iter().all(|v| v.0 == "g3"));
    }

    #[test]
    fn clips_that_do_not_decode_are_skipped_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.wav");
        write_wav(&good, &tone(8000, 440.0), 16000).unwrap();
        let bad = dir.path().join("bad.wav");
        fs::write(&bad, b"this is not audio at all").unwrap();
        let items: Vec<LabeledItem> = [&good, &bad, &dir.path().join("missing.wav")]
            .iter()
            .map(|p| LabeledItem {
                path: p.to_path_buf(),
                class: "x".into(),
                role: Role::Event,
                source_class: "x".into(),
                group: "g".into(),
            })
            .collect();
        let (clips, skipped) = load_clips(&items, Some(0.25));
        assert_eq!(clips.len(), 1);
        assert_eq!(clips[0].samples.len(), 4000);
        assert!((clips[0].samples[100] - tone(8000, 440.0)[100]).abs() < 1e-3);
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[0].path, bad);
        assert!(
            skipped[0].reason.contains("bad.wav"),
            "{}",
            skipped[0].reason
        );
    }

    #[test]
    fn test_groups_and_held_out_backgrounds_never_reach_training() {
        let mk = |name: &str, group: &str, role: Role| Clip {
            name: name.into(),
            class: "c".into(),
            role,
            group: group.into(),
            kind: "k".into(),
            samples: vec![0.0],
        };
        let mut clips = vec![
            mk("e1", "pkgA", Role::Event),
            mk("e2", "pkgT", Role::Event),
            mk("n1", "pkgT", Role::Negative),
            mk("n2", "pkgV", Role::Negative),
        ];
        for i in 0..400 {
            clips.push(mk(&format!("bg{i}"), "pkgB", Role::Background));
        }
        let split = SplitConfig {
            val_groups: vec!["pkgV".into()],
            test_groups: vec!["pkgT".into()],
            test_background_fraction: 0.25,
            val_background_fraction: Some(0.25),
            ..Default::default()
        };
        let (dev, test) = split.split_test(&clips);
        assert!(test.iter().any(|c| c.name == "e2") && test.iter().any(|c| c.name == "n1"));
        assert!(dev.iter().all(|c| c.group != "pkgT"));
        let test_bg = test.iter().filter(|c| c.role == Role::Background).count();
        assert!((70..130).contains(&test_bg), "{test_bg} of 400 held out");
        let (train, val) = split.split_clips(&dev);
        assert!(val.iter().any(|c| c.name == "n2") && train.iter().any(|c| c.name == "e1"));
        let val_bg = val.iter().filter(|c| c.role == Role::Background).count();
        assert!(
            (40..110).contains(&val_bg),
            "{val_bg} of {} to validation",
            400 - test_bg
        );
        // Deterministic, and disjoint.
        assert_eq!(split.split_test(&clips).1, test);
        for c in &train {
            assert!(!val.contains(c) && !test.contains(c));
        }
    }

    #[test]
    fn split_fields_handles_quotes() {
        assert_eq!(
            split_fields("a,\"b,c\",\"d\"\"e\"", ','),
            vec!["a", "b,c", "d\"e"]
        );
        assert_eq!(split_fields("x\t\ty", '\t'), vec!["x", "", "y"]);
    }
}
