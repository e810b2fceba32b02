package store

import (
	"context"
	"fmt"
)

const docCols = `id, tenant_id, owner_kind, owner_id, name, content_type, size, sha256, uploaded_by, created_at`

func scanDoc(s scanner) (Document, error) {
	var d Document
	var created int64
	err := s.Scan(&d.ID, &d.TenantID, &d.OwnerKind, &d.OwnerID, &d.Name, &d.ContentType, &d.Size, &d.SHA256, &d.UploadedBy, &created)
	d.CreatedAt = fromMicros(created)
	return d, err
}

func (d *db) CreateDocument(ctx context.Context, doc Document, content []byte) (Document, error) {
	doc.ID, doc.CreatedAt = newID(doc.ID), nowIfZero(doc.CreatedAt)
	doc.Size = int64(len(content))
	_, err := d.exec(ctx, d.sql, `INSERT INTO documents (`+docCols+`, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		doc.ID, doc.TenantID, doc.OwnerKind, doc.OwnerID, doc.Name, doc.ContentType, doc.Size, doc.SHA256, doc.UploadedBy, toMicros(doc.CreatedAt), content)
	if err != nil {
		return Document{}, fmt.Errorf("store.CreateDocument: %w", err)
	}
	return doc, nil
}

func (d *db) GetDocument(ctx context.Context, id string) (Document, error) {
	doc, err := scanDoc(d.row(ctx, d.sql, `SELECT `+docCols+` FROM documents WHERE id = ?`, id))
	if err != nil {
		return Document{}, notFound("store.GetDocument", id, err)
	}
	return doc, nil
}

func (d *db) GetDocumentContent(ctx context.Context, id string) ([]byte, error) {
	var b []byte
	if err := d.row(ctx, d.sql, `SELECT content FROM documents WHERE id = ?`, id).Scan(&b); err != nil {
		return nil, notFound("store.GetDocumentContent", id, err)
	}
	return b, nil
}

func (d *db) ListDocuments(ctx context.Context, ownerKind, ownerID string) ([]Document, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+docCols+` FROM documents WHERE owner_kind = ? AND owner_id = ? ORDER BY created_at, id`, ownerKind, ownerID)
	if err != nil {
		return nil, fmt.Errorf("store.ListDocuments: %w", err)
	}
	return collect(rows, scanDoc)
}

func (d *db) DeleteDocument(ctx context.Context, id string) error {
	res, err := d.exec(ctx, d.sql, `DELETE FROM documents WHERE id = ?`, id)
	return requireRow("store.DeleteDocument", id, res, err)
}
