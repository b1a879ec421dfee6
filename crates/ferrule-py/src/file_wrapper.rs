//! `wsgi.file_wrapper`: lets the server send a file with sendfile(2).

use pyo3::prelude::*;

/// Wraps a file-like object. Iterating it reads blocks (the portable path); the
/// server sends real files on plain sockets with sendfile instead.
#[pyclass(module = "ferrule._ferrule")]
pub struct FileWrapper {
    pub filelike: Py<PyAny>,
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok((data.len()? > 0).then_some(data))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

/// The descriptor, start offset and size of a regular file, or `None` when the
/// object is not a real file (a BytesIO, a pipe) and must be iterated instead.
pub fn regular_file(
    py: Python<'_>,
    filelike: &Bound<'_, PyAny>,
) -> PyResult<Option<(i32, u64, u64)>> {
    if !filelike.hasattr("fileno")? {
        return Ok(None);
    }
    let Ok(fd) = filelike
        .call_method0("fileno")
        .and_then(|f| f.extract::<i32>())
    else {
        return Ok(None);
    };
    let os = py.import("os")?;
    let stat = os.call_method1("fstat", (fd,))?;
    let mode: u32 = stat.getattr("st_mode")?.extract()?;
    if !py
        .import("stat")?
        .call_method1("S_ISREG", (mode,))?
        .is_truthy()?
    {
        return Ok(None);
    }
    let size: u64 = stat.getattr("st_size")?.extract()?;
    let pos: u64 = if filelike.hasattr("tell")? {
        filelike.call_method0("tell")?.extract()?
    } else {
        0
    };
    Ok(Some((fd, pos, size.saturating_sub(pos))))
}
