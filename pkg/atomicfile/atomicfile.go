// Package atomicfile replaces files so that a crash leaves either the old
// or the new content, never a mix.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data: path.tmp (0600) is written, synced and
// renamed over path, then the directory is synced so the rename is
// durable. On error the temporary file is removed and path is unchanged.
func Write(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
