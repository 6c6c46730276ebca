// Every string the console shows, in English and Simplified Chinese. `zh` is typed as a
// record over the English keys, so a key missing in either language fails `tsc`.

const en = {
  app_title: 'cityward console',
  login_heading: 'Sign in',
  login_username: 'User name',
  login_password: 'Password',
  login_submit: 'Sign in',
  login_failed: 'Sign-in failed',
  logout: 'Sign out',
  language: 'Language',
  signed_in_as: 'Signed in as {user} ({role})',
  jurisdiction_city: 'whole city',
  loading: 'Loading…',
  error_network: 'The node cannot be reached: {detail}',
  error_generic: 'Something went wrong: {detail}',
  live_connected: 'Live',
  live_disconnected: 'Reconnecting…',
  live_reloaded: 'The live stream fell behind; the list was reloaded.',

  // Map
  map_label: 'City map',
  layers: 'Layers',
  layer_regions: 'Regions',
  layer_grids: 'Patrol grids',
  layer_roads: 'Roads',
  layer_zones: 'Zones',
  layer_devices: 'Devices',
  layer_alerts: 'Alerts',
  popup_open_alert: 'Open alert',
  popup_cluster: '{n} devices here; zoom in to see them',
  popup_open_alerts: 'Open alerts: {n}',

  // Queue
  queue_heading: 'Alert queue',
  filter_status: 'Status',
  filter_severity: 'Severity',
  filter_category: 'Category',
  filter_category_placeholder: 'e.g. fire',
  filter_time: 'Raised within',
  filter_class: 'Kind',
  filter_any: 'Any',
  filter_open: 'Open',
  filter_unacked: 'Awaiting acknowledgement',
  filter_all_statuses: 'All',
  class_incident: 'Incidents',
  class_maintenance: 'Maintenance tickets',
  time_1h: 'last hour',
  time_6h: 'last 6 hours',
  time_24h: 'last 24 hours',
  time_7d: 'last 7 days',
  time_all: 'any time',
  queue_empty: 'No alerts match.',
  queue_count: '{shown} of {total} alerts',
  queue_more: 'Only the first {n} are listed; narrow the filters to see others.',
  escalates_in: 'escalates in {t}',
  arrival_due_in: 'arrival due in {t}',
  progress_due_in: 'progress due in {t}',
  overdue: 'overdue',
  owner: 'Owner',
  no_owner: 'no owner',
  shortcuts_heading: 'Keyboard shortcuts',
  shortcuts_hint: 'Press ? for keyboard shortcuts',
  key_j: 'next alert',
  key_k: 'previous alert',
  key_enter: 'open the selected alert',
  key_a: 'acknowledge the selected alert',
  key_d: 'dispatch to the selected alert',
  key_r: 'resolve the selected alert',
  key_esc: 'close the panel',
  key_help: 'show this help',
  close: 'Close',

  // Status, severity
  status_new: 'new',
  status_assigned: 'assigned',
  status_acknowledged: 'acknowledged',
  status_dispatched: 'dispatched',
  status_on_scene: 'on scene',
  status_resolved: 'resolved',
  status_closed: 'closed',
  status_escalated: 'escalated',
  status_transferred: 'transferred',
  status_suppressed: 'suppressed',
  severity_critical: 'critical',
  severity_high: 'high',
  severity_medium: 'medium',
  severity_low: 'low',

  // Alert page
  alert_heading: 'Alert',
  field_title: 'Title',
  field_severity: 'Severity',
  field_category: 'Category',
  field_status: 'Status',
  field_place: 'Place',
  field_grid: 'Grid',
  field_zone: 'Zone',
  field_time: 'Time',
  field_count: 'Repeats',
  field_owner: 'Owner unit',
  field_candidates: 'Candidate units',
  field_claimed: 'Claimed by',
  field_routing: 'Routing',
  field_routing_table: 'routing table version {v}',
  field_deadlines: 'Deadlines',
  field_ack_due: 'Acknowledge by',
  field_arrive_due: 'On scene by',
  field_progress_due: 'Progress by',
  field_no_deadline: 'none running',
  field_escalations: 'Escalated to',
  field_responders: 'Responders',
  field_disposition: 'Disposition',
  field_evidence: 'Evidence events',
  field_incident: 'Incident',
  field_rule: 'Rule',
  field_silence: 'Silenced by',
  timeline_heading: 'Timeline',
  timeline_empty: 'No steps yet.',
  timeline_by: 'by {actor}',
  download_cap: 'Download CAP',
  back_to_queue: 'Back',
  close_panel: 'Close panel',
  no_place: 'no place',
  alert_updated_live: 'Updated live',

  // Actions
  actions_heading: 'Actions',
  action_claim: 'Claim',
  action_ack: 'Acknowledge',
  action_dispatch: 'Dispatch',
  action_arrive: 'Arrived',
  action_resolve: 'Resolve',
  action_close: 'Close alert',
  action_reopen: 'Reopen',
  action_transfer: 'Transfer',
  action_done: '{action}: done',
  action_refused: 'Refused: {message}',
  action_none: 'No actions available to you in this status.',
  note: 'Note',
  note_optional: 'Note (optional)',
  note_required: 'Note (required)',
  submit: 'Submit',
  cancel: 'Cancel',
  dispatch_recommended: 'Nearest available responders',
  dispatch_none: 'No available responder with a fresh position.',
  dispatch_other: 'Other responder ids (comma separated)',
  dispatch_eta: 'ETA {eta}, {distance}',
  dispatch_by_road: 'by road',
  dispatch_straight: 'straight line',
  transfer_to: 'Transfer to unit',
  close_disposition: 'Disposition',
  disp_confirmed_incident: 'Confirmed incident',
  disp_false_alarm: 'False alarm',
  disp_device_fault: 'Device fault',
  disp_duplicate: 'Duplicate',
  disp_referred: 'Referred',
  disp_test: 'Test',

  // Incident
  incident_heading: 'Incident {id}',
  incident_summary: '{count} alerts, {open} open, {first} – {last}',
  incident_alerts: 'Alerts in this incident',

  // Responder view
  my_alerts: 'My alerts',
  my_alerts_unit: 'Alerts owned by {unit}',
  my_alerts_empty: 'No open alerts for your unit.',
  navigate: 'Navigate',
  coordinates: 'Coordinates',
  resolve_note: 'Resolution note',
  show_console: 'Full console',
  show_my_alerts: 'My alerts',


  // Roles and timeline steps
  role_admin: 'administrator',
  role_analyst: 'analyst',
  role_dispatcher: 'dispatcher',
  role_responder: 'responder',
  role_auditor: 'auditor',
  role_reader: 'reader',
  role_ingest: 'ingest',
  step_raised: 'raised',
  step_routed: 'routed',
  step_escalate: 'escalated',
  step_retrigger: 're-triggered',
  step_claim: 'claimed',
  step_ack: 'acknowledged',
  step_dispatch: 'dispatched',
  step_arrive: 'arrived',
  step_resolve: 'resolved',
  step_close: 'closed',
  step_reopen: 'reopened',
  step_transfer: 'transferred',

  // Units of time and distance
  minutes_short: '{n} min',
  seconds_short: '{n} s',
  metres: '{n} m',
  kilometres: '{n} km',
} as const;

export type MessageKey = keyof typeof en;

const zh: Record<MessageKey, string> = {
  app_title: 'cityward 控制台',
  login_heading: '登录',
  login_username: '用户名',
  login_password: '密码',
  login_submit: '登录',
  login_failed: '登录失败',
  logout: '退出登录',
  language: '语言',
  signed_in_as: '当前用户 {user}（{role}）',
  jurisdiction_city: '全市',
  loading: '加载中…',
  error_network: '无法连接节点：{detail}',
  error_generic: '出现错误：{detail}',
  live_connected: '实时',
  live_disconnected: '正在重新连接…',
  live_reloaded: '实时推送滞后，列表已重新加载。',

  map_label: '城市地图',
  layers: '图层',
  layer_regions: '行政区域',
  layer_grids: '巡逻网格',
  layer_roads: '道路',
  layer_zones: '区域',
  layer_devices: '设备',
  layer_alerts: '告警',
  popup_open_alert: '打开告警',
  popup_cluster: '此处有 {n} 台设备，放大查看',
  popup_open_alerts: '未结告警：{n}',

  queue_heading: '告警队列',
  filter_status: '状态',
  filter_severity: '级别',
  filter_category: '类别',
  filter_category_placeholder: '例如 fire',
  filter_time: '发生时间',
  filter_class: '类型',
  filter_any: '全部',
  filter_open: '未结',
  filter_unacked: '待签收',
  filter_all_statuses: '全部',
  class_incident: '事件',
  class_maintenance: '运维工单',
  time_1h: '最近 1 小时',
  time_6h: '最近 6 小时',
  time_24h: '最近 24 小时',
  time_7d: '最近 7 天',
  time_all: '不限',
  queue_empty: '没有符合条件的告警。',
  queue_count: '共 {total} 条，显示 {shown} 条',
  queue_more: '仅列出前 {n} 条；请缩小筛选范围查看其余告警。',
  escalates_in: '{t} 后升级',
  arrival_due_in: '{t} 内须到场',
  progress_due_in: '{t} 内须推进',
  overdue: '已超时',
  owner: '责任单位',
  no_owner: '无责任单位',
  shortcuts_heading: '键盘快捷键',
  shortcuts_hint: '按 ? 查看键盘快捷键',
  key_j: '下一条告警',
  key_k: '上一条告警',
  key_enter: '打开所选告警',
  key_a: '签收所选告警',
  key_d: '为所选告警派警',
  key_r: '办结所选告警',
  key_esc: '关闭面板',
  key_help: '显示本帮助',
  close: '关闭',

  status_new: '新建',
  status_assigned: '已分派',
  status_acknowledged: '已签收',
  status_dispatched: '已派警',
  status_on_scene: '已到场',
  status_resolved: '已处置',
  status_closed: '已关闭',
  status_escalated: '已升级',
  status_transferred: '已转办',
  status_suppressed: '已静默',
  severity_critical: '特急',
  severity_high: '紧急',
  severity_medium: '一般',
  severity_low: '提示',

  alert_heading: '告警',
  field_title: '标题',
  field_severity: '级别',
  field_category: '类别',
  field_status: '状态',
  field_place: '位置',
  field_grid: '网格',
  field_zone: '区域',
  field_time: '时间',
  field_count: '重复次数',
  field_owner: '责任单位',
  field_candidates: '候选单位',
  field_claimed: '认领单位',
  field_routing: '分派依据',
  field_routing_table: '分派表版本 {v}',
  field_deadlines: '时限',
  field_ack_due: '签收时限',
  field_arrive_due: '到场时限',
  field_progress_due: '推进时限',
  field_no_deadline: '无进行中的时限',
  field_escalations: '已升级至',
  field_responders: '处置力量',
  field_disposition: '处置结论',
  field_evidence: '证据事件',
  field_incident: '关联事件',
  field_rule: '规则',
  field_silence: '静默规则',
  timeline_heading: '处置记录',
  timeline_empty: '暂无记录。',
  timeline_by: '操作人 {actor}',
  download_cap: '下载 CAP',
  back_to_queue: '返回',
  close_panel: '关闭面板',
  no_place: '无位置',
  alert_updated_live: '已实时更新',

  actions_heading: '操作',
  action_claim: '认领',
  action_ack: '签收',
  action_dispatch: '派警',
  action_arrive: '到场',
  action_resolve: '办结',
  action_close: '关闭告警',
  action_reopen: '重新打开',
  action_transfer: '转办',
  action_done: '{action}：已完成',
  action_refused: '操作被拒绝：{message}',
  action_none: '当前状态下您没有可用的操作。',
  note: '备注',
  note_optional: '备注（可选）',
  note_required: '备注（必填）',
  submit: '提交',
  cancel: '取消',
  dispatch_recommended: '最近的可用处置力量',
  dispatch_none: '没有位置有效的可用处置力量。',
  dispatch_other: '其他处置力量编号（以逗号分隔）',
  dispatch_eta: '预计 {eta} 到达，{distance}',
  dispatch_by_road: '沿道路',
  dispatch_straight: '直线',
  transfer_to: '转办至单位',
  close_disposition: '处置结论',
  disp_confirmed_incident: '确有警情',
  disp_false_alarm: '误报',
  disp_device_fault: '设备故障',
  disp_duplicate: '重复告警',
  disp_referred: '已移交',
  disp_test: '测试',

  incident_heading: '事件 {id}',
  incident_summary: '共 {count} 条告警，{open} 条未结，{first} – {last}',
  incident_alerts: '本事件的告警',

  my_alerts: '我的告警',
  my_alerts_unit: '{unit} 负责的告警',
  my_alerts_empty: '本单位暂无未结告警。',
  navigate: '导航',
  coordinates: '坐标',
  resolve_note: '办结说明',
  show_console: '完整控制台',
  show_my_alerts: '我的告警',

  role_admin: '管理员',
  role_analyst: '分析员',
  role_dispatcher: '调度员',
  role_responder: '处置人员',
  role_auditor: '审计员',
  role_reader: '只读用户',
  role_ingest: '数据接入',
  step_raised: '产生',
  step_routed: '分派',
  step_escalate: '升级',
  step_retrigger: '重新触发',
  step_claim: '认领',
  step_ack: '签收',
  step_dispatch: '派警',
  step_arrive: '到场',
  step_resolve: '办结',
  step_close: '关闭',
  step_reopen: '重新打开',
  step_transfer: '转办',

  minutes_short: '{n} 分钟',
  seconds_short: '{n} 秒',
  metres: '{n} 米',
  kilometres: '{n} 公里',
};

export type Locale = 'en' | 'zh-CN';
const dictionaries: Record<Locale, Record<MessageKey, string>> = { en, 'zh-CN': zh };
const STORAGE_KEY = 'cityward.locale';

/** The language a first visit gets: Chinese for any zh* browser language, else English. */
export function browserLocale(languages: readonly string[] = navigator.languages ?? [navigator.language]): Locale {
  const first = (languages[0] ?? navigator.language ?? 'en').toLowerCase();
  return first.startsWith('zh') ? 'zh-CN' : 'en';
}

function initialLocale(): Locale {
  const saved = localStorage.getItem(STORAGE_KEY);
  return saved === 'en' || saved === 'zh-CN' ? saved : browserLocale();
}

let current: Locale = initialLocale();
const listeners = new Set<() => void>();

export function locale(): Locale {
  return current;
}

export function setLocale(next: Locale): void {
  current = next;
  localStorage.setItem(STORAGE_KEY, next);
  document.documentElement.lang = next;
  document.title = t('app_title');
  for (const listener of listeners) listener();
}

/** Called after every language change (the views re-render their text). */
export function onLocaleChange(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** The message `key` in the active language, with `{name}` placeholders filled in. */
export function t(key: MessageKey, params: Record<string, string | number> = {}): string {
  const template = dictionaries[current][key];
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => (name in params ? String(params[name]) : whole));
}

/** A status, severity or disposition code in words, falling back to the code itself. */
export function tCode(prefix: 'status' | 'severity' | 'disp' | 'role' | 'step', code: string | undefined | null): string {
  if (!code) return '';
  const key = `${prefix}_${code}`;
  return key in en ? t(key as MessageKey) : code;
}

const dateTimeFormats = new Map<string, Intl.DateTimeFormat>();

/** A date and time in the active locale. */
export function formatDateTime(iso: string | undefined | null): string {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  let format = dateTimeFormats.get(current);
  if (!format) {
    format = new Intl.DateTimeFormat(current, { dateStyle: 'short', timeStyle: 'medium' });
    dateTimeFormats.set(current, format);
  }
  return format.format(date);
}

/** A number in the active locale. */
export function formatNumber(n: number, fractionDigits = 0): string {
  return new Intl.NumberFormat(current, { maximumFractionDigits: fractionDigits }).format(n);
}

/** Seconds as m:ss (or h:mm:ss), for the countdowns. */
export function formatCountdown(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${String(m).padStart(2, '0')}:${ss}`;
}

export function formatDistance(metres: number): string {
  return metres >= 1000 ? t('kilometres', { n: formatNumber(metres / 1000, 1) }) : t('metres', { n: formatNumber(metres) });
}

export function formatDuration(seconds: number): string {
  return seconds >= 60 ? t('minutes_short', { n: formatNumber(seconds / 60, 1) }) : t('seconds_short', { n: formatNumber(seconds) });
}
