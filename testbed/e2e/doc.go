// Package e2e holds end-to-end tests that run the real binaries —
// gantry-controlplane, gantry-agent — as separate processes on loopback.
package e2e
