package acceptance

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

var pdf = []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")

func (w *world) docClient(key string) gantryv1connect.DocumentServiceClient {
	return gantryv1connect.NewDocumentServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor(key).Token))
}

func TestDocuments(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		up := func(who, kind, owner, name, ct string, content []byte) (*gantryv1.Document, error) {
			r, err := w.docClient(who).UploadDocument(ctx, connect.NewRequest(&gantryv1.UploadDocumentRequest{OwnerKind: kind, OwnerId: owner, Name: name, ContentType: ct, Content: content}))
			if err != nil {
				return nil, err
			}
			return r.Msg.Document, nil
		}
		doc, err := up("O1/WM", "asset", w.id("A1"), "manual.pdf", "application/pdf", pdf)
		if err != nil {
			t.Fatalf("WM uploads to A1: %v", err)
		}
		if doc.Size != int64(len(pdf)) || len(doc.Sha256) != 64 {
			t.Errorf("document %v", doc)
		}
		list := func(who, kind, owner string) (int, error) {
			r, err := w.docClient(who).ListDocuments(ctx, connect.NewRequest(&gantryv1.ListDocumentsRequest{OwnerKind: kind, OwnerId: owner}))
			if err != nil {
				return 0, err
			}
			return len(r.Msg.Documents), nil
		}
		for _, tc := range []struct {
			name string
			err  error
			code connect.Code
		}{
			{"MO (read) cannot upload", func() error { _, err := up("O1/MO", "asset", w.id("A1"), "x.pdf", "application/pdf", pdf); return err }(), connect.CodePermissionDenied},
			{"admin cannot upload", func() error {
				_, err := up("O1/admin", "asset", w.id("A1"), "x.pdf", "application/pdf", pdf)
				return err
			}(), connect.CodePermissionDenied},
			{"other tenant's asset", func() error { _, err := up("O2/MO", "asset", w.id("A1"), "x.pdf", "application/pdf", pdf); return err }(), connect.CodeNotFound},
			{"provider on asset docs", func() error { _, err := list("P1/ST", "asset", w.id("A1")); return err }(), connect.CodeNotFound},
			{"content not a PDF", func() error {
				_, err := up("O1/WM", "asset", w.id("A1"), "x.pdf", "application/pdf", []byte("#!/bin/sh\nrm -rf /\n"))
				return err
			}(), connect.CodeInvalidArgument},
			{"executable type", func() error {
				_, err := up("O1/WM", "asset", w.id("A1"), "x.exe", "application/x-msdownload", []byte("MZ"))
				return err
			}(), connect.CodeInvalidArgument},
			{"oversized", func() error {
				_, err := up("O1/WM", "asset", w.id("A1"), "big.txt", "text/plain", bytes.Repeat([]byte("a"), 10<<20+1))
				return err
			}(), connect.CodeInvalidArgument},
			{"path in name", func() error {
				_, err := up("O1/WM", "asset", w.id("A1"), "../etc/passwd", "text/plain", []byte("x"))
				return err
			}(), connect.CodeInvalidArgument},
			{"bad owner kind", func() error {
				_, err := up("O1/WM", "case", w.id("I1"), "x.txt", "text/plain", []byte("x"))
				return err
			}(), connect.CodeInvalidArgument},
			{"operator on model docs", func() error { _, err := list("O1/WM", "machine_model", w.id("M1")); return err }(), connect.CodeNotFound},
			{"MO cannot delete", func() error {
				_, err := w.docClient("O1/MO").DeleteDocument(ctx, connect.NewRequest(&gantryv1.DeleteDocumentRequest{Id: doc.Id}))
				return err
			}(), connect.CodePermissionDenied},
		} {
			if connect.CodeOf(tc.err) != tc.code {
				t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.code)
			}
		}
		if n, err := list("O1/MO", "asset", w.id("A1")); err != nil || n != 1 {
			t.Errorf("MO lists A1 documents: %d, %v (want exactly the one accepted upload)", n, err)
		}
		// Scoped: ME-F1 reads A1 (F1) documents but not A3 (F2) ones.
		if _, err := up("O1/WM", "asset", w.id("A3"), "a3.txt", "text/plain", []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := list("O1/ME-F1", "asset", w.id("A3")); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("ME-F1 lists A3 documents: %v", err)
		}
		// Browser download with Content-Disposition.
		req, _ := http.NewRequest(http.MethodGet, w.srv.URL+"/api/documents/"+doc.Id, nil)
		req.Header.Set("Authorization", "Bearer "+w.actor("O1/MO").Token)
		resp, err := w.srv.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(body, pdf) || !strings.Contains(resp.Header.Get("Content-Disposition"), "manual.pdf") || resp.Header.Get("Content-Type") != "application/pdf" {
			t.Errorf("download: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Disposition"), resp.Header.Get("Content-Type"))
		}
		req.Header.Set("Authorization", "Bearer "+w.actor("P1/ST").Token)
		resp, err = w.srv.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("provider downloads an asset document: %d", resp.StatusCode)
		}
		// Provider model documents.
		md, err := up("P1/MDM", "machine_model", w.id("M1"), "wiring.png", "image/png", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
		if err != nil {
			t.Fatalf("MDM uploads model doc: %v", err)
		}
		g, err := w.docClient("P1/1LS").GetDocument(ctx, connect.NewRequest(&gantryv1.GetDocumentRequest{Id: md.Id}))
		if err != nil || len(g.Msg.Content) != 16 {
			t.Errorf("1LS reads model doc: %v", err)
		}
		if _, err := w.docClient("P2/ST").GetDocument(ctx, connect.NewRequest(&gantryv1.GetDocumentRequest{Id: md.Id})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("P2 reads P1 model doc: %v", err)
		}
		if _, err := w.docClient("O1/WM").DeleteDocument(ctx, connect.NewRequest(&gantryv1.DeleteDocumentRequest{Id: doc.Id})); err != nil {
			t.Errorf("WM deletes: %v", err)
		}
	})
}

func TestServiceContracts(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		client := func(who string) gantryv1connect.CustomerServiceClient {
			return gantryv1connect.NewCustomerServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor(who).Token))
		}
		add := func(who string, c *gantryv1.ServiceContract) error {
			_, err := client(who).CreateServiceContract(ctx, connect.NewRequest(&gantryv1.CreateServiceContractRequest{Contract: c}))
			return err
		}
		good := &gantryv1.ServiceContract{CustomerId: w.id("C1"), Name: "Full service 2027", StartDate: "2027-01-01", EndDate: "2027-12-31"}
		if err := add("P1/CDM", good); err != nil {
			t.Fatalf("CDM adds contract: %v", err)
		}
		for _, tc := range []struct {
			who  string
			c    *gantryv1.ServiceContract
			code connect.Code
		}{
			{"P1/1LS", good, connect.CodePermissionDenied},
			{"P2/ST", good, connect.CodeNotFound},
			{"P1/CDM", &gantryv1.ServiceContract{CustomerId: w.id("C1"), Name: "x", StartDate: "2027-13-01"}, connect.CodeInvalidArgument},
			{"P1/CDM", &gantryv1.ServiceContract{CustomerId: w.id("C1"), Name: "x", StartDate: "2027-02-01", EndDate: "2027-01-01"}, connect.CodeInvalidArgument},
			{"O1/WM", good, connect.CodePermissionDenied},
		} {
			if err := add(tc.who, tc.c); connect.CodeOf(err) != tc.code {
				t.Errorf("%s adds %v: %v, want %v", tc.who, tc.c, err, tc.code)
			}
		}
		r, err := client("P1/CDM").ListServiceContracts(ctx, connect.NewRequest(&gantryv1.ListServiceContractsRequest{CustomerId: w.id("C1")}))
		if err != nil || len(r.Msg.Contracts) != 1 || r.Msg.Contracts[0].Name != "Full service 2027" {
			t.Errorf("contracts: %v %v", r, err)
		}
	})
}
