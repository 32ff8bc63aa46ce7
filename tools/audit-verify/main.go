// audit-verify checks cdc's proofs and signed checkpoints without cdc, using only Go's standard
// library and golang.org/x/mod/sumdb (note: C2SP signed notes; tlog: RFC 6962/9162 Merkle proofs).
//
//	audit-verify [-checkpoint FILE -key VKEY] [PROOF.json ...]
//
// A checkpoint (from `cdc log digest --sign`) must carry a valid signature by VKEY (the verifier key
// name+hash+base64, or a file holding it), and its body must be a C2SP tlog-checkpoint: origin line,
// decimal tree size, base64 root hash.
//
// An inclusion proof (`cdc log prove SEQ`): leaf_hash must be tlog.RecordHash(record), that is
// SHA-256(0x00 || record), and path must prove leaf seq-1 in the tree of tree_size leaves with that
// root (tlog.CheckRecord). A consistency proof (`cdc log prove --consistency`): path must prove the
// tree of old_size leaves with old_root a prefix of the tree of new_size leaves with new_root
// (tlog.CheckTree). With a checkpoint, each proof must also have a root at the checkpoint's tree size
// (an inclusion proof's tree_size, a consistency proof's old_size or new_size) equal to its root.
//
// Prints one "ok: ..." line per checkpoint and proof and exits 0; otherwise prints one line naming the
// file and the check that failed and exits 1 (2 for bad usage).
//
// Build (Debian packages golang-go and golang-golang-x-mod-dev; offline, GOPATH mode):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o audit-verify ./tools/audit-verify
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// checkpoint is a verified tlog-checkpoint body.
type checkpoint struct {
	signer string
	origin string
	size   int64
	root   tlog.Hash
}

// openCheckpoint checks the note's signature by vkey and parses its body (c2sp.org/tlog-checkpoint).
func openCheckpoint(path, vkey string) (checkpoint, error) {
	if text, err := os.ReadFile(vkey); err == nil {
		vkey = strings.TrimSpace(string(text))
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return checkpoint{}, fmt.Errorf("verifier key check failed: %v", err)
	}
	msg, err := os.ReadFile(path)
	if err != nil {
		return checkpoint{}, err
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return checkpoint{}, fmt.Errorf("signature check failed: %v", err)
	}
	// origin, size and root lines, each ending with a newline; extension lines may follow.
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] == "" {
		return checkpoint{}, errors.New("checkpoint body check failed: origin, size and root lines expected")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || lines[1] != strconv.FormatInt(size, 10) {
		return checkpoint{}, fmt.Errorf("checkpoint body check failed: tree size %q is not a decimal number", lines[1])
	}
	root, err := tlog.ParseHash(lines[2]) // base64 of 32 bytes
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint body check failed: root %q is not 32 bytes of base64", lines[2])
	}
	return checkpoint{verifier.Name(), lines[0], size, root}, nil
}

// proof holds either kind of cdc proof file (schemas/event-log.md, "Proofs").
type proof struct {
	Format   string   `json:"format"`
	Seq      int64    `json:"seq"`
	TreeSize int64    `json:"tree_size"`
	LeafHash string   `json:"leaf_hash"`
	Record   []byte   `json:"record"` // base64 in the JSON
	Path     []string `json:"path"`
	Root     string   `json:"root"`
	OldSize  int64    `json:"old_size"`
	NewSize  int64    `json:"new_size"`
	OldRoot  string   `json:"old_root"`
	NewRoot  string   `json:"new_root"`
}

func parseHash(field, text string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := hex.DecodeString(text)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("malformed proof: %s is not 64 hex digits", field)
	}
	copy(h[:], b)
	return h, nil
}

func parsePath(texts []string) ([]tlog.Hash, error) {
	path := make([]tlog.Hash, len(texts))
	for i, text := range texts {
		h, err := parseHash(fmt.Sprintf("path[%d]", i), text)
		if err != nil {
			return nil, err
		}
		path[i] = h
	}
	return path, nil
}

// checkProof verifies one proof file; roots maps its tree sizes to their roots, for the checkpoint.
func checkProof(file string) (ok string, roots map[int64]tlog.Hash, err error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", nil, err
	}
	var p proof
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&p); err != nil {
		return "", nil, fmt.Errorf("malformed proof: %v", err)
	}
	path, err := parsePath(p.Path)
	if err != nil {
		return "", nil, err
	}
	switch p.Format {
	case "cdc-inclusion-proof-1":
		leaf, err := parseHash("leaf_hash", p.LeafHash)
		if err != nil {
			return "", nil, err
		}
		root, err := parseHash("root", p.Root)
		if err != nil {
			return "", nil, err
		}
		if leaf != tlog.RecordHash(p.Record) {
			return "", nil, errors.New("leaf hash check failed: leaf_hash is not SHA-256(0x00 || record)")
		}
		if p.Seq < 1 || p.Seq > p.TreeSize {
			return "", nil, fmt.Errorf("inclusion proof check failed: seq %d is not in 1...tree_size %d", p.Seq, p.TreeSize)
		}
		if err := tlog.CheckRecord(path, p.TreeSize, root, p.Seq-1, leaf); err != nil {
			return "", nil, fmt.Errorf("inclusion proof check failed: %v", err)
		}
		return fmt.Sprintf("ok: %s: record %d is in the tree of %d records with root %x", file, p.Seq, p.TreeSize, root[:]),
			map[int64]tlog.Hash{p.TreeSize: root}, nil
	case "cdc-consistency-proof-1":
		oldRoot, err := parseHash("old_root", p.OldRoot)
		if err != nil {
			return "", nil, err
		}
		newRoot, err := parseHash("new_root", p.NewRoot)
		if err != nil {
			return "", nil, err
		}
		if p.OldSize < 0 || p.OldSize > p.NewSize {
			return "", nil, fmt.Errorf("consistency proof check failed: old_size %d is not in 0...new_size %d", p.OldSize, p.NewSize)
		}
		if p.OldSize == 0 {
			// Every tree extends the empty one, whose RFC 9162 root is SHA-256 of nothing (tlog has no
			// proof of size 0: it defines the empty tree's hash as all zeros).
			if len(path) != 0 || oldRoot != sha256.Sum256(nil) {
				return "", nil, errors.New("consistency proof check failed: from size 0 the path must be empty and old_root SHA-256(\"\")")
			}
		} else if err := tlog.CheckTree(path, p.NewSize, newRoot, p.OldSize, oldRoot); err != nil {
			return "", nil, fmt.Errorf("consistency proof check failed: %v", err)
		}
		return fmt.Sprintf("ok: %s: the tree of %d records (root %x) is a prefix of the tree of %d (root %x)", file, p.OldSize, oldRoot[:], p.NewSize, newRoot[:]),
			map[int64]tlog.Hash{p.OldSize: oldRoot, p.NewSize: newRoot}, nil
	default:
		return "", nil, fmt.Errorf("malformed proof: format %q is not cdc-inclusion-proof-1 or cdc-consistency-proof-1", p.Format)
	}
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "audit-verify: %s: %v\n", what, err)
	os.Exit(1)
}

func main() {
	checkpointFile := flag.String("checkpoint", "", "a signed checkpoint from `cdc log digest --sign` (needs -key)")
	key := flag.String("key", "", "the checkpoint's verifier key, name+hash+base64, or a file holding it")
	flag.Parse()
	if (*checkpointFile == "") != (*key == "") || (*checkpointFile == "" && flag.NArg() == 0) {
		fmt.Fprintln(os.Stderr, "usage: audit-verify [-checkpoint FILE -key VKEY] [PROOF.json ...]")
		os.Exit(2)
	}
	var cp *checkpoint
	if *checkpointFile != "" {
		c, err := openCheckpoint(*checkpointFile, *key)
		if err != nil {
			fail(*checkpointFile, err)
		}
		cp = &c
		fmt.Printf("ok: %s: signed by %s, origin %q, tree size %d, root %x\n", *checkpointFile, c.signer, c.origin, c.size, c.root[:])
	}
	for _, file := range flag.Args() {
		ok, roots, err := checkProof(file)
		if err != nil {
			fail(file, err)
		}
		if cp != nil {
			root, found := roots[cp.size]
			if !found {
				fail(file, fmt.Errorf("tree size check failed: the proof has no root at the checkpoint's tree size %d", cp.size))
			}
			if root != cp.root {
				fail(file, fmt.Errorf("root check failed: the proof's root at tree size %d is not the checkpoint's", cp.size))
			}
			ok += "; matches the checkpoint"
		}
		fmt.Println(ok)
	}
}
