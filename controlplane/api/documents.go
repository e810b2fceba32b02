package api

import (
	"context"
	"fmt"
	"mime"
	"net/http"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/store"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

type documentService struct{ *Server }

func documentPB(d store.Document) *gantryv1.Document {
	return &gantryv1.Document{Id: d.ID, OwnerKind: d.OwnerKind, OwnerId: d.OwnerID, Name: d.Name, ContentType: d.ContentType, Size: d.Size,
		Sha256: d.SHA256, UploadedBy: d.UploadedBy, CreatedAt: ts(d.CreatedAt)}
}

func (s *documentService) UploadDocument(ctx context.Context, req *connect.Request[gantryv1.UploadDocumentRequest]) (*connect.Response[gantryv1.UploadDocumentResponse], error) {
	m := req.Msg
	d, err := s.fleet.UploadDocument(ctx, CallerFrom(ctx), m.OwnerKind, m.OwnerId, m.Name, m.ContentType, m.Content)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.UploadDocumentResponse{Document: documentPB(d)}), nil
}

func (s *documentService) ListDocuments(ctx context.Context, req *connect.Request[gantryv1.ListDocumentsRequest]) (*connect.Response[gantryv1.ListDocumentsResponse], error) {
	ds, err := s.fleet.ListDocuments(ctx, CallerFrom(ctx), req.Msg.OwnerKind, req.Msg.OwnerId)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListDocumentsResponse{}
	for _, d := range ds {
		out.Documents = append(out.Documents, documentPB(d))
	}
	return connect.NewResponse(out), nil
}

func (s *documentService) GetDocument(ctx context.Context, req *connect.Request[gantryv1.GetDocumentRequest]) (*connect.Response[gantryv1.GetDocumentResponse], error) {
	d, b, err := s.fleet.GetDocument(ctx, CallerFrom(ctx), req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.GetDocumentResponse{Document: documentPB(d), Content: b}), nil
}

func (s *documentService) DeleteDocument(ctx context.Context, req *connect.Request[gantryv1.DeleteDocumentRequest]) (*connect.Response[gantryv1.DeleteDocumentResponse], error) {
	if err := s.fleet.DeleteDocument(ctx, CallerFrom(ctx), req.Msg.Id); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.DeleteDocumentResponse{}), nil
}

// downloadDocument serves GET /api/documents/{id} for browsers.
func (s *Server) downloadDocument(w http.ResponseWriter, r *http.Request) {
	c, err := s.authenticateHTTP(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	d, b, err := s.fleet.GetDocument(r.Context(), c, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", d.ContentType)
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": d.Name}))
	_, _ = w.Write(b)
}
