//! Bad model files are refused with an error that names the file and says what is wrong.

use hark::model::{Model, ModelError};
use hark_e2e::{metadata, random_net};
use prost::Message;
use tract_onnx::pb::ModelProto;

fn good_bytes() -> Vec<u8> {
    random_net(1, 64, 1, 16, 4)
        .to_onnx(&metadata(4, 64))
        .unwrap()
}

fn edited(edit: impl FnOnce(&mut ModelProto)) -> Vec<u8> {
    let mut proto = ModelProto::decode(&good_bytes()[..]).unwrap();
    edit(&mut proto);
    proto.encode_to_vec()
}

fn set_meta(p: &mut ModelProto, key: &str, value: Option<&str>) {
    p.metadata_props.retain(|e| e.key != key);
    if let Some(v) = value {
        p.metadata_props
            .push(tract_onnx::pb::StringStringEntryProto {
                key: key.into(),
                value: v.into(),
            });
    }
}

fn refused(bytes: &[u8], name: &str) -> (ModelError, String) {
    let e = Model::from_bytes(bytes, name).expect_err("a bad model was accepted");
    let msg = e.to_string();
    assert!(
        msg.contains(name),
        "the message does not name the file: {msg}"
    );
    (e, msg)
}

#[test]
fn the_good_model_loads() {
    let m = Model::from_bytes(&good_bytes(), "good.onnx").unwrap();
    assert_eq!(m.n_classes(), 4);
    assert_eq!(m.metadata().classes[0], "background");
}

#[test]
fn empty_text_and_truncated_files_are_not_onnx() {
    let (e, msg) = refused(&[], "empty.onnx");
    assert!(matches!(e, ModelError::NotOnnx { .. }), "{msg}");
    let (e, msg) = refused(b"<html>this is a web page, not a model</html>", "page.onnx");
    assert!(matches!(e, ModelError::NotOnnx { .. }), "{msg}");
    let good = good_bytes();
    for cut in [good.len() / 3, good.len() / 2, good.len() - 7] {
        let (_, msg) = refused(&good[..cut], "cut.onnx");
        // Cut mid-field it cannot be decoded; cut between fields, parts are missing. Either
        // way the file is refused with a reason, never a panic.
        assert!(!msg.is_empty());
    }
}

#[test]
fn a_missing_file_is_an_io_error() {
    let e = Model::load("/nonexistent/model.onnx").unwrap_err();
    assert!(matches!(e, ModelError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/model.onnx"));
}

#[test]
fn wrong_opset_is_refused() {
    let b = edited(|p| p.opset_import[0].version = 9);
    let (e, msg) = refused(&b, "old.onnx");
    assert!(matches!(e, ModelError::Opset { found: 9, .. }), "{msg}");
}

#[test]
fn missing_or_malformed_metadata_is_refused_naming_the_key() {
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        ("hark.frontend", None, "missing"),
        ("hark.classes", None, "missing"),
        ("hark.thresholds", Some("{not json"), "malformed"),
        ("hark.format_version", Some("2"), "version 2"),
        (
            "hark.classes",
            Some("[\"background\", \"a\", \"a\", \"b\"]"),
            "repeated",
        ),
        (
            "hark.background",
            Some("\"silence\""),
            "not one of the classes",
        ),
        (
            "hark.frontend",
            Some("{\"sample_rate\": 16000}"),
            "malformed",
        ),
    ];
    for (key, value, needle) in cases {
        let b = edited(|p| set_meta(p, key, value));
        let (e, msg) = refused(&b, "meta.onnx");
        assert!(matches!(e, ModelError::Metadata { .. }), "{key}: {msg}");
        assert!(
            msg.contains(key) && msg.contains(needle),
            "{key}: {msg:?} lacks {needle:?}"
        );
    }
}

#[test]
fn features_the_runtime_cannot_compute_are_refused() {
    let fe = hark::frontend::FrontendConfig {
        mel_scale: "slaney".into(),
        ..Default::default()
    };
    let json = serde_json::to_string(&fe).unwrap();
    let b = edited(|p| set_meta(p, "hark.frontend", Some(&json)));
    let (_, msg) = refused(&b, "slaney.onnx");
    assert!(
        msg.contains("hark.frontend") && msg.contains("mel scale"),
        "{msg}"
    );
}

#[test]
fn classes_that_do_not_match_the_thresholds_are_refused() {
    for (thresholds, needle) in [
        (
            r#"{"class_1": 0.5, "class_2": 0.5}"#,
            "no threshold for class \"class_3\"",
        ),
        (
            r#"{"class_1": 0.5, "class_2": 0.5, "class_3": 0.5, "siren": 0.5}"#,
            "\"siren\", which is not an event class",
        ),
        (
            r#"{"class_1": 1.5, "class_2": 0.5, "class_3": 0.5}"#,
            "not in (0, 1)",
        ),
    ] {
        let b = edited(|p| set_meta(p, "hark.thresholds", Some(thresholds)));
        let (_, msg) = refused(&b, "thr.onnx");
        assert!(
            msg.contains("hark.thresholds") && msg.contains(needle),
            "{msg}"
        );
    }
    // Five names for a graph that scores four classes.
    let b = edited(|p| {
        set_meta(
            p,
            "hark.classes",
            Some(r#"["background","class_1","class_2","class_3","class_4"]"#),
        );
        set_meta(
            p,
            "hark.thresholds",
            Some(r#"{"class_1":0.5,"class_2":0.5,"class_3":0.5,"class_4":0.5}"#),
        );
    });
    let (_, msg) = refused(&b, "count.onnx");
    assert!(msg.contains("5 classes named, the graph scores 4"), "{msg}");
}

#[test]
fn wrong_inputs_and_shapes_are_refused() {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    use tract_onnx::pb::type_proto::Value as T;
    // The graph takes 64 bands; the metadata says 40.
    let fe = hark::frontend::FrontendConfig {
        n_mels: 40,
        ..Default::default()
    };
    let json = serde_json::to_string(&fe).unwrap();
    let b = edited(|p| set_meta(p, "hark.frontend", Some(&json)));
    let (e, msg) = refused(&b, "bands.onnx");
    assert!(
        matches!(e, ModelError::Interface { .. }) && msg.contains("[1, T, 40]"),
        "{msg}"
    );
    // A renamed input.
    let b = edited(|p| p.graph.as_mut().unwrap().input[0].name = "x".into());
    let (e, msg) = refused(&b, "names.onnx");
    assert!(
        matches!(e, ModelError::Interface { .. }) && msg.contains("inputs are"),
        "{msg}"
    );
    // A state input of the wrong rank.
    let b = edited(|p| {
        let T::TensorType(t) = p.graph.as_mut().unwrap().input[1]
            .r#type
            .as_mut()
            .unwrap()
            .value
            .as_mut()
            .unwrap();
        t.shape.as_mut().unwrap().dim[1].value = Some(Value::DimValue(3));
    });
    let (_, msg) = refused(&b, "state.onnx");
    assert!(
        msg.contains("h_in") && msg.contains("[layers, 1, hidden]"),
        "{msg}"
    );
}

#[test]
fn a_graph_tract_cannot_build_is_refused() {
    // LSTM weights of the wrong size: well-formed protobuf, impossible graph.
    let b = edited(|p| {
        let g = p.graph.as_mut().unwrap();
        let w = g
            .initializer
            .iter_mut()
            .find(|t| t.name == "lstm0_W")
            .unwrap();
        w.dims[1] = 8;
        w.raw_data.truncate(8 * 64 * 4);
    });
    let (e, msg) = refused(&b, "graph.onnx");
    assert!(matches!(e, ModelError::Graph { .. }), "{msg}");
}
