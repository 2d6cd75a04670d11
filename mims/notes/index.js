// @ts-check
// mims/notes — controller style (seed 003) on context.storage: a small tagged-notes API.
//
//   POST   /notes            {"text": "...", "tag": "work"}  -> 201 the note
//   GET    /notes            all notes, oldest first (?tag=work for one tag)
//   GET    /notes?id=ID      one note
//   DELETE /notes?id=ID      remove one note
//   DELETE /notes?tag=work   remove every note tagged work -> {"removed": N}
var storage = context.storage;

function notes(tag) {
  var out = [];
  var collect = function (key, value) { out.push(JSON.parse(value)); };
  if (tag) storage.eachItemByTag(tag, collect);
  else storage.eachItem(collect);
  return out;
}

exports.get = function (req) {
  if (req.params.id) {
    var note = storage.getItem(req.params.id);
    return note ? { body: JSON.parse(note) } : { status: 404, body: { error: { status: 404, message: 'no note ' + req.params.id } } };
  }
  return { body: notes(req.params.tag) };
};

exports.post = function (req) {
  var input;
  try { input = JSON.parse(req.body || '{}'); } catch (e) {
    return { status: 400, body: { error: { status: 400, message: 'body must be JSON: ' + e.message } } };
  }
  if (typeof input.text !== 'string' || !input.text) {
    return { status: 400, body: { error: { status: 400, message: 'a note needs a "text" string' } } };
  }
  var note = { id: 'n' + Date.now().toString(36) + Math.random().toString(36).slice(2, 6), text: input.text, tag: input.tag || 'untagged', created: new Date().toISOString() };
  storage.setItemWithTag(note.id, JSON.stringify(note), note.tag);
  return { status: 201, body: note };
};

exports.delete = function (req) {
  if (req.params.tag) return { body: { removed: storage.removeItemsByTag(req.params.tag) } };
  if (!req.params.id || storage.getItem(req.params.id) === null) {
    return { status: 404, body: { error: { status: 404, message: 'no note ' + (req.params.id || '(missing id)') } } };
  }
  storage.removeItem(req.params.id);
  return { status: 204 };
};
