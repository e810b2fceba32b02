package server

import (
	"strings"
	"testing"
)

// TestConfigExternalBroker: the external-broker flags are validated with
// errors that name the flag, and a valid setting turns the embedded
// broker off.
func TestConfigExternalBroker(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no CRL file", Config{MQTTExternal: "tls://mqtt.example.com:8883"}, "--mqtt-crl-file"},
		{"not TLS", Config{MQTTExternal: "tcp://mqtt.example.com:1883", MQTTCRLFile: "/x/crl.pem"}, "want tls://host:port"},
		{"no port", Config{MQTTExternal: "tls://mqtt.example.com", MQTTCRLFile: "/x/crl.pem"}, "want tls://host:port"},
		{"both brokers", Config{MQTTExternal: "tls://mqtt.example.com:8883", MQTTCRLFile: "/x/crl.pem", MQTTListen: "127.0.0.1:8883"}, "either the embedded broker or an external one"},
		{"reload without file", Config{MQTTCRLReload: "systemctl reload mosquitto"}, "--mqtt-crl-reload without --mqtt-crl-file"},
		{"too many ingest clients", Config{MQTTIngestClients: 65}, "--mqtt-ingest-clients"},
		{"valid", Config{MQTTExternal: "tls://mqtt.example.com:8883", MQTTCRLFile: "/x/crl.pem", MQTTCRLReload: "systemctl reload mosquitto"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.Dev, c.DataDir = true, t.TempDir()
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if c.MQTTListen != "off" {
					t.Errorf("MQTTListen = %q with an external broker, want off", c.MQTTListen)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Validate = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
