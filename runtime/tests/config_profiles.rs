//! Every profile in firmware-config/ loads; bad keys, types and values are refused with the
//! key or field named.

use std::path::{Path, PathBuf};

use hark::config::{Config, ConfigError};

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-config")
}

#[test]
fn every_profile_in_firmware_config_loads() {
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(profiles_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            // Parsing refuses unknown keys, so a misspelt key cannot silently fall back to
            // its default; validation has checked every range.
            assert!(cfg.runtime.threads >= 1);
            loaded.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    loaded.sort();
    assert_eq!(
        loaded,
        [
            "desktop.toml",
            "raspberry-pi-4.toml",
            "raspberry-pi-zero-2w.toml"
        ]
    );
}

#[test]
fn the_small_board_profile_is_smaller() {
    let zero = Config::load(profiles_dir().join("raspberry-pi-zero-2w.toml")).unwrap();
    let desktop = Config::load(profiles_dir().join("desktop.toml")).unwrap();
    assert_eq!(zero.runtime.threads, 1);
    assert!(zero.audio.ring_seconds < desktop.audio.ring_seconds);
    assert!(zero.sinks.mqtt.enabled);
}

fn parse(text: &str) -> ConfigError {
    Config::parse(text, Path::new("profile.toml")).unwrap_err()
}

#[test]
fn an_unknown_key_is_an_error_naming_it() {
    let e = parse("[runtime]\nthreads = 1\nthread = 2\n");
    assert_eq!(e.field(), Some("runtime.thread"), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("profile.toml:3:1"), "{msg}");
    assert!(msg.contains("unknown field `thread`"), "{msg}");
    // Unknown sections and unknown keys of nested tables too.
    let e = parse("[audoi]\ndevice = \"\"\n");
    assert!(e.to_string().contains("audoi"), "{e}");
    let e = parse("[sinks.mqtt]\nhostname = \"broker\"\n");
    assert_eq!(e.field(), Some("sinks.mqtt.hostname"), "{e}");
    let e = parse("[postprocess.classes.glass_break]\nthreshhold = 0.5\n");
    assert_eq!(
        e.field(),
        Some("postprocess.classes.glass_break.threshhold"),
        "{e}"
    );
}

#[test]
fn a_wrong_value_type_names_the_field() {
    let e = parse("[runtime]\nthreads = \"two\"\n");
    assert!(
        matches!(e, ConfigError::Toml { line: Some(2), .. }),
        "{e:?}"
    );
    assert_eq!(e.field(), Some("runtime.threads"), "{e}");
    assert!(e.to_string().contains("runtime.threads"), "{e}");
    let e = parse("[sinks]\nstdout = 1\n");
    assert_eq!(e.field(), Some("sinks.stdout"), "{e}");
    let e = parse("[postprocess]\nafter_max_length = \"never\"\n");
    assert_eq!(e.field(), Some("postprocess.after_max_length"), "{e}");
    // Negative into an unsigned field.
    let e = parse("[audio]\nchannels = -1\n");
    assert_eq!(e.field(), Some("audio.channels"), "{e}");
}

#[test]
fn out_of_range_values_are_refused_naming_the_field() {
    let cases = [
        (
            "[reconnect]\ninitial_backoff = -1.0\n",
            "reconnect.initial_backoff",
        ),
        (
            "[reconnect]\ninitial_backoff = 0.0\n",
            "reconnect.initial_backoff",
        ),
        (
            "[reconnect]\ninitial_backoff = 10.0\nmax_backoff = 5.0\n",
            "reconnect.max_backoff",
        ),
        ("[runtime]\nthreads = 0\n", "runtime.threads"),
        ("[audio]\nsample_rate = 1000\n", "audio.sample_rate"),
        ("[audio]\nchannels = 0\n", "audio.channels"),
        ("[audio]\nperiod_frames = 4\n", "audio.period_frames"),
        ("[audio]\nring_seconds = 0.0\n", "audio.ring_seconds"),
        ("[audio]\nring_seconds = nan\n", "audio.ring_seconds"),
        ("[sinks.mqtt]\nqos = 3\n", "sinks.mqtt.qos"),
        ("[sinks.mqtt]\nport = 0\n", "sinks.mqtt.port"),
        ("[sinks.mqtt]\ntopic = \"hark/#\"\n", "sinks.mqtt.topic"),
        (
            "[sinks.mqtt]\nenabled = true\nhost = \"\"\n",
            "sinks.mqtt.host",
        ),
        ("[sinks.webhook]\nenabled = true\n", "sinks.webhook.url"),
        ("[sinks.webhook]\ntimeout = 0.0\n", "sinks.webhook.timeout"),
        ("[sinks.command]\nenabled = true\n", "sinks.command.program"),
        (
            "[postprocess]\nsmoothing = -0.01\n",
            "postprocess.smoothing",
        ),
        (
            "[postprocess]\nhysteresis = 1.5\n",
            "postprocess.hysteresis",
        ),
        ("[postprocess]\ncooldown = -1.0\n", "postprocess.cooldown"),
        (
            "[postprocess]\nmin_length = 5.0\nmax_length = 1.0\n",
            "postprocess.min_length",
        ),
        (
            "[postprocess.classes.glass_break]\nthreshold = 0.3\nhysteresis = 0.4\n",
            "postprocess.classes.glass_break.hysteresis",
        ),
        (
            "[postprocess.classes.glass_break]\nthreshold = 0.0\n",
            "postprocess.classes.glass_break.threshold",
        ),
    ];
    for (text, field) in cases {
        let e = parse(text);
        assert!(
            matches!(e, ConfigError::Invalid { .. }),
            "{text}: not a value error: {e}"
        );
        assert_eq!(e.field(), Some(field), "{text}: {e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("profile.toml: ") && msg.contains(field),
            "{msg}"
        );
    }
}

#[test]
fn load_names_the_file_and_resolves_the_model_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e.to_string().contains("missing.toml"), "{e}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[runtime\n").unwrap();
    let e = Config::load(&bad).unwrap_err();
    assert!(e.to_string().starts_with(&bad.display().to_string()), "{e}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[runtime]\nmodel = \"models/m.onnx\"\n").unwrap();
    let cfg = Config::load(&good).unwrap();
    assert_eq!(
        cfg.runtime.model_path(),
        Some(dir.path().join("models/m.onnx").as_path())
    );
    assert_eq!(Config::default().runtime.model_path(), None);
}

#[test]
fn runtime_engine_is_auto_by_default_and_names_a_bad_value() {
    use hark::model::EngineChoice;
    let ok = |t: &str| {
        Config::parse(t, Path::new("p.toml"))
            .unwrap()
            .runtime
            .engine
    };
    assert_eq!(ok(""), EngineChoice::Auto);
    assert_eq!(ok("[runtime]\nengine = \"native\"\n"), EngineChoice::Native);
    assert_eq!(ok("[runtime]\nengine = \"tract\"\n"), EngineChoice::Tract);
    let e = parse("[runtime]\nengine = \"onnx\"\n");
    assert_eq!(e.field(), Some("runtime.engine"), "{e}");
    for p in [
        "desktop.toml",
        "raspberry-pi-4.toml",
        "raspberry-pi-zero-2w.toml",
    ] {
        let cfg = Config::load(profiles_dir().join(p)).unwrap();
        assert_eq!(cfg.runtime.engine, EngineChoice::Auto, "{p}");
    }
}
