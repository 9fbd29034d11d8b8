//! Generates the Rust for every .proto file under `portcullis/`, clients and servers, with
//! the protoc that `protoc-bin-vendored` ships (so a fresh machine needs no protoc), and
//! writes the file descriptor set that gRPC server reflection serves.

use std::error::Error;
use std::path::{Path, PathBuf};

/// The name of the descriptor set file in OUT_DIR; `src/lib.rs` includes it.
const DESCRIPTOR_FILE: &str = "portcullis_descriptor.bin";

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = root.join("portcullis");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut protos = Vec::new();
    collect_protos(&proto_dir, &mut protos)?;
    // Sorted so the generated code and descriptor set do not depend on directory order.
    protos.sort();
    if protos.is_empty() {
        return Err(format!("no .proto files under {}", proto_dir.display()).into());
    }

    // A directory makes cargo rescan it recursively, which also catches added files.
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut config = tonic_prost_build::Config::new();
    // The vendored protoc, passed by path: setting PROTOC with set_var would need unsafe.
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    // The well-known types (google/protobuf/*.proto) ship beside the vendored protoc.
    let includes = [root, protoc_bin_vendored::include_path()?];

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        // Bytes fields decode without a copy from tonic's buffers (AdmissionReview bodies).
        .bytes(".portcullis")
        // prost's codec with a decode buffer that holds a whole AdmissionReview (src/codec.rs).
        .codec_path("crate::codec::PortcullisCodec")
        .file_descriptor_set_path(out_dir.join(DESCRIPTOR_FILE))
        .compile_with_config(config, &protos, &includes)?;
    Ok(())
}

/// Every `.proto` file under `dir`, recursively.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
