"""The demo's users, groups and sample alarms, in the demo's four languages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from alarms.models import Audience, Level

PASSWORD = "alarms-demo"
OPERATOR = "operator"
SITE = "http://127.0.0.1:8000"

# username -> (language they read, groups)
USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "alice": ("Korean (한국어)", ("Night shift",)),
    "bob": ("Japanese (日本語)", ("Night shift", "Engineering")),
    "carol": ("English", ("Engineering",)),
    "dana": ("Arabic (العربية)", ()),
}
GROUPS = ("Night shift", "Engineering")


@dataclass(frozen=True)
class Sample:
    level: str
    audience: str
    text: dict[str, tuple[str, str]]
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    url: str = ""
    # Offsets from now; the windows say which status each sample shows in the admin.
    publish_in: timedelta = timedelta(0)
    expires_in: timedelta | None = None
    withdrawn: bool = False


SAMPLES = (
    Sample(
        Level.INFO,
        Audience.EVERYONE,
        {
            "en": (
                "Welcome to the alarms demo",
                "Alarms written in the admin appear here as soon as they are published, "
                "in your language.",
            ),
            "ko": (
                "알람 데모에 오신 것을 환영합니다",
                "관리 화면에서 작성한 알람은 게시되는 즉시 여러분의 언어로 이곳에 표시됩니다.",
            ),
            "ja": (
                "アラームのデモへようこそ",
                "管理画面で作成したアラームは、公開されるとすぐにあなたの言語でここに表示されます。",
            ),
            "ar": (
                "مرحبًا بك في العرض التجريبي للتنبيهات",
                "تظهر هنا التنبيهات المكتوبة في لوحة الإدارة فور نشرها، وبلغتك.",
            ),
        },
    ),
    Sample(
        Level.WARNING,
        Audience.AUTHENTICATED,
        {
            "en": (
                "Scheduled maintenance tonight",
                "The system will be unavailable tonight from 22:00 to 23:30 UTC. "
                "Please save your work before then.",
            ),
            "ko": (
                "오늘 밤 정기 점검 안내",
                "오늘 밤 22:00부터 23:30(UTC)까지 시스템을 이용할 수 없습니다. "
                "그 전에 작업 내용을 저장해 주세요.",
            ),
            "ja": (
                "今夜の定期メンテナンスのお知らせ",
                "今夜22:00から23:30(UTC)まで、システムをご利用いただけません。"
                "それまでに作業内容を保存してください。",
            ),
            "ar": (
                "صيانة مجدولة الليلة",
                "سيكون النظام غير متاح الليلة من الساعة 22:00 حتى 23:30 بالتوقيت العالمي. "
                "يُرجى حفظ عملك قبل ذلك.",
            ),
        },
        url="/",
        expires_in=timedelta(days=7),
    ),
    Sample(
        Level.CRITICAL,
        Audience.SELECTED,
        {
            "en": (
                "Database failover in progress",
                "The primary database is down and the replica is taking over. "
                "Do not restart any services until the all-clear.",
            ),
            "ko": (
                "데이터베이스 장애 조치 진행 중",
                "주 데이터베이스가 중단되어 복제본이 역할을 넘겨받고 있습니다. "
                "해제 안내가 있을 때까지 어떤 서비스도 재시작하지 마세요.",
            ),
            "ja": (
                "データベースのフェイルオーバー中",
                "プライマリデータベースが停止したため、レプリカに切り替えています。"
                "解除の連絡があるまで、サービスを再起動しないでください。",
            ),
            "ar": (
                "جارٍ نقل قاعدة البيانات إلى النسخة الاحتياطية",
                "توقفت قاعدة البيانات الرئيسية وتتولى النسخة المتماثلة عملها الآن. "
                "لا تُعِد تشغيل أي خدمة حتى يُعلَن انتهاء الحالة.",
            ),
        },
        groups=("Night shift",),
    ),
    Sample(
        Level.ERROR,
        Audience.STAFF,
        {
            "en": (
                "Nightly backup failed",
                "Last night's backup did not complete. An administrator should check the "
                "backup logs.",
            ),
            "ko": (
                "야간 백업 실패",
                "어젯밤 백업이 완료되지 않았습니다. 관리자는 백업 로그를 확인해 주세요.",
            ),
            "ja": (
                "夜間バックアップの失敗",
                "昨夜のバックアップが完了しませんでした。管理者はバックアップのログを確認してください。",
            ),
            "ar": (
                "فشل النسخ الاحتياطي الليلي",
                "لم يكتمل النسخ الاحتياطي الليلة الماضية. ينبغي للمسؤول مراجعة سجلات "
                "النسخ الاحتياطي.",
            ),
        },
    ),
    Sample(
        Level.SUCCESS,
        Audience.SELECTED,
        {
            "en": (
                "Version 2.4 is live",
                "The new release is now running on every server. Thank you for testing it.",
            ),
            "ko": (
                "버전 2.4 배포 완료",
                "새 릴리스가 모든 서버에 배포되었습니다. 테스트해 주셔서 감사합니다.",
            ),
            "ja": (
                "バージョン2.4をリリースしました",
                "新しいリリースをすべてのサーバーに展開しました。テストへのご協力ありがとうございました。",
            ),
            "ar": (
                "الإصدار 2.4 متاح الآن",
                "يعمل الإصدار الجديد الآن على جميع الخوادم. شكرًا لكم على اختباره.",
            ),
        },
        groups=("Engineering",),
        users=("dana",),
    ),
    Sample(
        Level.INFO,
        Audience.AUTHENTICATED,
        {
            "en": (
                "Fire drill",
                "A fire drill starts shortly. When the alarm sounds, leave by the nearest "
                "exit and gather in the car park.",
            ),
            "ko": (
                "소방 훈련 안내",
                "곧 소방 훈련이 시작됩니다. 경보가 울리면 가장 가까운 비상구로 나가 "
                "주차장에 모여 주세요.",
            ),
            "ja": (
                "避難訓練のお知らせ",
                "まもなく避難訓練を始めます。警報が鳴ったら、最寄りの出口から外に出て"
                "駐車場に集合してください。",
            ),
            "ar": (
                "تمرين إخلاء للحريق",
                "سيبدأ تمرين الإخلاء بعد قليل. عند سماع صفارة الإنذار، غادِر من أقرب مخرج "
                "وتوجَّه إلى موقف السيارات.",
            ),
        },
        # Scheduled: it goes live two minutes after the demo is loaded.
        publish_in=timedelta(minutes=2),
        expires_in=timedelta(hours=1),
    ),
    Sample(
        Level.INFO,
        Audience.EVERYONE,
        {
            "en": (
                "Office closed on Monday",
                "The office was closed on Monday for the public holiday.",
            ),
            "ko": ("월요일 사무실 휴무", "월요일은 공휴일이라 사무실이 문을 닫았습니다."),
            "ja": ("月曜日は休業しました", "月曜日は祝日のため、オフィスは休業しました。"),
            "ar": ("المكتب مغلق يوم الاثنين", "أُغلق المكتب يوم الاثنين بمناسبة العطلة الرسمية."),
        },
        publish_in=-timedelta(days=2),
        expires_in=timedelta(days=1),
    ),
    Sample(
        Level.WARNING,
        Audience.AUTHENTICATED,
        {
            "en": (
                "Network outage in building B",
                "The wired network in building B is down. Use the Wi-Fi until it is fixed.",
            ),
            "ko": (
                "B동 네트워크 장애",
                "B동의 유선 네트워크가 중단되었습니다. 복구될 때까지 Wi-Fi를 이용해 주세요.",
            ),
            "ja": (
                "B棟のネットワーク障害",
                "B棟の有線ネットワークが停止しています。復旧するまでWi-Fiをご利用ください。",
            ),
            "ar": (
                "انقطاع الشبكة في المبنى B",
                "الشبكة السلكية في المبنى B متوقفة. استخدم شبكة Wi-Fi إلى حين إصلاحها.",
            ),
        },
        withdrawn=True,
    ),
)
