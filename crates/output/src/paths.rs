//! Outputs that would overwrite inputs.

use std::path::{Component, Path, PathBuf};

use crate::error::{OutputError, Result, io};

/// Refuses `output` when it is one of `inputs` (each `(what, path)`, `what` naming the input
/// for the message: a flag or a noun) or lies inside one, after
/// resolving symbolic links and `..` (an output that does not exist yet is resolved through its
/// nearest existing ancestor). Writing there would truncate or replace the input before it is
/// read (`acts export STORE --out STORE/shard-00000.safetensors`).
pub fn check_not_inside(output: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    let out = resolve(output)?;
    for &(what, input) in inputs {
        let Ok(inp) = input.canonicalize() else {
            continue; // a missing input fails where it is opened, with its own message
        };
        if out.starts_with(&inp) {
            return Err(OutputError::OutputInsideInput {
                what: what.to_string(),
                output: output.to_path_buf(),
                input: input.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// `path` made absolute with links resolved as far as it exists; the rest appended as written
/// (`..` in the missing part applied lexically).
fn resolve(path: &Path) -> Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(io(path))?.join(path)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                match part {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::Normal(p) => out.push(p),
                    _ => {}
                }
            }
            return Ok(out);
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return Ok(abs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_equal_to_or_inside_an_input_are_refused_through_links_and_dots() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(store.join("shard-00000.safetensors"), b"x").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&store, &link).unwrap();
        let inputs = [("--acts", store.as_path())];
        for bad in [
            store.join("shard-00000.safetensors"),
            store.join("manifest.json"),
            store.clone(),
            store.join("new/deeper.npy"),
            link.join("shard-00000.safetensors"),
            tmp.path().join("other/../store/x.npy"),
        ] {
            let e = check_not_inside(&bad, &inputs).unwrap_err().to_string();
            assert!(e.contains("would overwrite the input --acts"), "{e}");
        }
        for ok in [
            tmp.path().join("store.npy"),
            tmp.path().join("storeX/a.npy"),
        ] {
            check_not_inside(&ok, &inputs).unwrap();
        }
        // A file input: the same file under another name is refused.
        let npy = tmp.path().join("acts.npy");
        std::fs::write(&npy, b"x").unwrap();
        assert!(
            check_not_inside(&tmp.path().join("./acts.npy"), &[("input", npy.as_path())]).is_err()
        );
    }
}
