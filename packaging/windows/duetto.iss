; Inno Setup script of Duetto's Windows installer: a per-user install (no administrator),
; a Start-menu entry, a "Repair Duetto" entry and an uninstaller. It packs the launcher
; that packaging/build_installer.py froze (build\dist\duetto, with its payload\ folder).
; The release workflow runs:
;   iscc /DAppVersion=0.1.0 /DSourceDir=build\dist\duetto /DOutputDir=dist packaging\windows\duetto.iss
; Unsigned: Windows SmartScreen warns until the installer is signed.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\build\dist\duetto"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif

[Setup]
AppId={{7C1B0E7A-3F0B-4C55-9E7B-D7E0C2B6A1F4}
AppName=Duetto
AppVersion={#AppVersion}
AppPublisher=Duetto
DefaultDirName={localappdata}\Programs\Duetto
DefaultGroupName=Duetto
PrivilegesRequired=lowest
DisableProgramGroupPage=yes
OutputDir={#OutputDir}
OutputBaseFilename=Duetto-{#AppVersion}-setup
Compression=lzma2
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
UninstallDisplayIcon={app}\duetto.exe
; A newer installer closes a running Duetto, replaces the program and keeps the environment:
; its next start updates the environment in place.
CloseApplications=yes

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: recursesubdirs createallsubdirs ignoreversion

[InstallDelete]
; The previous version's payload goes, so no stale lock is left beside the new one.
Type: filesandordirs; Name: "{app}\payload"

[Icons]
Name: "{group}\Duetto"; Filename: "{app}\duetto.exe"
Name: "{group}\Repair Duetto"; Filename: "{app}\duetto.exe"; Parameters: "--repair"
Name: "{group}\Uninstall Duetto"; Filename: "{uninstallexe}"

[Run]
Filename: "{app}\duetto.exe"; Description: "Start Duetto (the first start downloads its libraries)"; Flags: nowait postinstall skipifsilent

[UninstallRun]
; The environment the first start built (in %LOCALAPPDATA%); settings, personas,
; recordings and models stay.
Filename: "{app}\duetto.exe"; Parameters: "--remove-environment --no-window"; Flags: runhidden waituntilterminated; RunOnceId: "RemoveEnvironment"
