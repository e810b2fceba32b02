package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// MaxDocumentSize is the largest accepted upload.
const MaxDocumentSize = 10 << 20

// DocRepo is the document persistence fleet needs.
type DocRepo interface {
	CreateDocument(ctx context.Context, d store.Document, content []byte) (store.Document, error)
	GetDocument(ctx context.Context, id string) (store.Document, error)
	GetDocumentContent(ctx context.Context, id string) ([]byte, error)
	ListDocuments(ctx context.Context, ownerKind, ownerID string) ([]store.Document, error)
	DeleteDocument(ctx context.Context, id string) error
}

// sniffed maps an accepted declared content type to what
// http.DetectContentType must report for the content.
var sniffed = map[string]string{
	"application/pdf": "application/pdf",
	"image/png":       "image/png",
	"image/jpeg":      "image/jpeg",
	"text/plain":      "text/plain",
	"text/csv":        "text/plain",
	"application/zip": "application/zip",
}

// docOwner checks the caller's Documents & Media level on an owner.
func (s *Service) docOwner(ctx context.Context, c *identity.Caller, kind, id string, l authz.Level) error {
	if err := identity.CheckID("owner_id", id); err != nil {
		return err
	}
	switch kind {
	case store.DocAsset:
		if c.Tenant.Kind != authz.KindOperator {
			return notFound("asset", id)
		}
		a, err := s.repo.GetAsset(ctx, id)
		if err != nil || a.TenantID != c.Tenant.ID {
			return notFound("asset", id)
		}
		return need(c.Principal, authz.DocumentsMedia, l, assetLocation(a), "use documents of this asset")
	case store.DocMachineModel:
		m, err := s.repo.GetMachineModel(ctx, id)
		if err != nil || m.TenantID != c.Tenant.ID {
			return notFound("machine model", id)
		}
		return need(c.Principal, authz.DocumentsMedia, l, tenantLoc(c), "use documents of machine models")
	}
	return errkind.Invalidf("owner_kind", "%q: use asset or machine_model", kind)
}

// UploadDocument stores a checked file on an asset or machine model.
func (s *Service) UploadDocument(ctx context.Context, c *identity.Caller, kind, ownerID, name, contentType string, content []byte) (store.Document, error) {
	if err := s.docOwner(ctx, c, kind, ownerID, authz.Manage); err != nil {
		return store.Document{}, err
	}
	name, err := identity.CheckName("name", name)
	if err != nil {
		return store.Document{}, err
	}
	if strings.ContainsAny(name, `/\`) {
		return store.Document{}, errkind.Invalidf("name", "a file name without / or \\ is required")
	}
	if len(content) == 0 {
		return store.Document{}, errkind.Invalidf("content", "the file is empty")
	}
	if len(content) > MaxDocumentSize {
		return store.Document{}, errkind.Invalidf("content", "the file has %d bytes; at most %d (10 MiB) are accepted", len(content), MaxDocumentSize)
	}
	ct := strings.ToLower(strings.TrimSpace(strings.SplitN(contentType, ";", 2)[0]))
	want, ok := sniffed[ct]
	if !ok {
		return store.Document{}, errkind.Invalidf("content_type", "%q is not accepted; upload PDF, PNG, JPEG, plain text, CSV or ZIP", contentType)
	}
	if got := http.DetectContentType(content); !strings.HasPrefix(got, want) {
		return store.Document{}, errkind.Invalidf("content", "the content looks like %s, not %s; check the file", got, ct)
	}
	sum := sha256.Sum256(content)
	d, err := s.docs().CreateDocument(ctx, store.Document{TenantID: c.Tenant.ID, OwnerKind: kind, OwnerID: ownerID, Name: name, ContentType: ct,
		SHA256: hex.EncodeToString(sum[:]), UploadedBy: c.User.ID, CreatedAt: s.now().UTC()}, content)
	return d, wrapIf("upload document", err)
}

func (s *Service) docs() DocRepo { return s.repo }

// ListDocuments lists an owner's documents (Documents & Media ≥ read).
func (s *Service) ListDocuments(ctx context.Context, c *identity.Caller, kind, ownerID string) ([]store.Document, error) {
	if err := s.docOwner(ctx, c, kind, ownerID, authz.Read); err != nil {
		return nil, err
	}
	return s.docs().ListDocuments(ctx, kind, ownerID)
}

// document loads a document the caller may use at level l.
func (s *Service) document(ctx context.Context, c *identity.Caller, id string, l authz.Level) (store.Document, error) {
	if err := identity.CheckID("id", id); err != nil {
		return store.Document{}, err
	}
	d, err := s.docs().GetDocument(ctx, id)
	if err != nil || d.TenantID != c.Tenant.ID {
		return store.Document{}, notFound("document", id)
	}
	return d, s.docOwner(ctx, c, d.OwnerKind, d.OwnerID, l)
}

// GetDocument returns a document and its content (Documents & Media ≥ read).
func (s *Service) GetDocument(ctx context.Context, c *identity.Caller, id string) (store.Document, []byte, error) {
	d, err := s.document(ctx, c, id, authz.Read)
	if err != nil {
		return store.Document{}, nil, err
	}
	b, err := s.docs().GetDocumentContent(ctx, id)
	return d, b, err
}

// DeleteDocument removes a document (Documents & Media = manage).
func (s *Service) DeleteDocument(ctx context.Context, c *identity.Caller, id string) error {
	if _, err := s.document(ctx, c, id, authz.Manage); err != nil {
		return err
	}
	return s.docs().DeleteDocument(ctx, id)
}
