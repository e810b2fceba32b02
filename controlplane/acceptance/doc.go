// Package acceptance checks the scenario oracle of
// ../shared/acceptance/case-rules.csv (a copy lives in testdata/) through
// the control plane's public JSON API, each row on a fresh copy of the
// world the file's header describes. Product code never reads these files.
package acceptance
